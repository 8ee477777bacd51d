"""The text classifier the ``bayes`` scorer runs: message tokens (`tokens`), the features it
reads (`features`: tokens and byte 4-grams, hashed), and the model that learns online from
them (`online`), whose fitted state is part of a model artifact (`mailguard.model`)."""
