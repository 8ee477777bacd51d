"""Built-in scorers; each registers in the ``mailguard.scorers`` entry-point group."""
