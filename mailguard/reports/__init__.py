"""User reports ("this is spam", "this is not spam"): reading them from files, Maildir, mbox
and ARF feedback reports (`sources`), and the durable, deduplicated queue in the store that
`Scanner.report` adds to and retraining reads (`queue`)."""
