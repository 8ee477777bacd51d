"""Sender authentication checks, as plain functions the ``auth`` scorer (and reputation and
feedback, which need to know who really sent a message) call: SPF (`spf`), DKIM and ARC
(`dkim`), DMARC (`dmarc`). Every DNS answer comes from mailguard's shared `Resolver`."""
