"""The text classifier the ``bayes`` scorer runs: message tokens (`tokens`) and the Bayesian
model over them (`bayes`), whose fitted state is part of a model artifact (`mailguard.model`)."""
