"""Learning from labelled mail, offline: corpora and their labels (`datasets`), training and
cross-validation (`train`), retraining from users' reports with a promotion gate (`retrain`),
and the quality metrics both report (`evaluate`). Built on the `Scanner`; nothing in the scan
path imports this package."""
