"""HTML reduced to the text a reader sees, plus its links and images (lxml: fast and lenient)."""

from __future__ import annotations

import dataclasses
import re

import lxml.etree
import lxml.html

__all__ = ["HtmlText", "html_to_text"]

_INVISIBLE = ("script", "style", "head", "title", "template", "noscript")
_BLOCK = ("p", "div", "br", "tr", "td", "th", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "blockquote", "hr")
_MAX_LINKS = 1000
# no_network: never fetch anything a message points at; huge_tree off keeps libxml2's depth limits.
_PARSER = lxml.html.HTMLParser(no_network=True, remove_comments=True, remove_pis=True)
# lxml refuses a str that starts with an XML declaration naming an encoding (XHTML mail)
_XML_DECL = re.compile(r"^\ufeff?\s*<\?xml[^>]*>")
# Characters XML forbids: the HTML parser keeps them in text, but lxml then refuses that text
# when it is set again (ValueError), as html_to_text does to separate blocks.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


@dataclasses.dataclass(frozen=True)
class HtmlText:
    text: str
    links: list[tuple[str, str]]  # (href, visible link text)
    image_count: int


def html_to_text(html: str) -> HtmlText:
    """Visible text (script, style and head dropped; blocks separated by newlines), links
    with their text, and the number of images. Unparseable HTML gives empty text."""
    if not html.strip():
        return HtmlText("", [], 0)
    html = _NOT_XML.sub(" ", _XML_DECL.sub("", html, count=1))
    try:
        doc = lxml.html.document_fromstring(html, parser=_PARSER)
    except (lxml.etree.ParserError, ValueError):
        return HtmlText("", [], 0)
    for element in list(doc.iter(*_INVISIBLE)):
        if element.getparent() is not None:
            element.drop_tree()
    links = []
    for anchor in doc.iter("a"):
        href = anchor.get("href")
        if href and len(links) < _MAX_LINKS:
            links.append((href.strip(), " ".join(anchor.text_content().split())))
    images = sum(1 for _ in doc.iter("img"))
    for element in doc.iter(*_BLOCK):  # a line break before and after each block
        text, tail = element.text or "", element.tail or ""  # (a refused assignment clears the old value)
        try:
            element.text, element.tail = "\n" + text, "\n" + tail
        except ValueError:  # a character reference (&#8) made one XML forbids: lxml refuses it back
            element.text, element.tail = "\n" + _NOT_XML.sub(" ", text), "\n" + _NOT_XML.sub(" ", tail)
    return HtmlText(doc.text_content(), links, images)
