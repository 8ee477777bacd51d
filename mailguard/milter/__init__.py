"""The milter daemon for Postfix and Sendmail: the daemon on pymilter (`daemon`, imported only
by ``mailguard milter``, since pymilter is an optional dependency), verdicts turned into
milter replies (`actions`), and its Prometheus metrics (`metrics`)."""
