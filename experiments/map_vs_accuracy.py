"""The mAP that codes as good as a classifier of a given accuracy would score.

Each image gets the code of the class a classifier predicts for it (one
random K-bit centre per class; a wrong prediction is uniform over the other
classes), so codes cluster perfectly by predicted class. The printed mAP,
with the evaluation's tie rule, tells what classification accuracy a target
mAP asks of the backbone: on ``dhn`` the database images are unseen (same
accuracy as the queries); on ``cifar10-2`` the database is the training set
(accuracy 0.99 assumed).

    python benchmarks/map_vs_accuracy.py
"""

import numpy as np

from keras_hash import metrics as evaluation
from keras_hash import pack_codes


def simulated_map(rng, queries, database, query_acc, database_acc, top_k, bits=48):
    centres = rng.choice([-1.0, 1.0], (10, bits))

    def codes_and_labels(count, accuracy):
        labels = rng.integers(0, 10, count)
        wrong = rng.random(count) > accuracy
        predicted = np.where(wrong, (labels + rng.integers(1, 10, count)) % 10, labels)
        return pack_codes(centres[predicted], "signs"), labels

    query_codes, query_labels = codes_and_labels(queries, query_acc)
    database_codes, database_labels = codes_and_labels(database, database_acc)
    return evaluation.mean_average_precision(
        query_codes=query_codes,
        query_labels=query_labels,
        database_codes=database_codes,
        database_labels=database_labels,
        bits=bits,
        top_k=top_k,
    )


def main():
    rng = np.random.default_rng(0)
    for accuracy in (0.70, 0.76, 0.80, 0.85, 0.90):
        value = simulated_map(rng, 1000, 54000, accuracy, accuracy, None)
        print(f"dhn (mAP@54000):        accuracy {accuracy:.2f} -> mAP {value:.3f}")
    for accuracy in (0.85, 0.88, 0.90, 0.92):
        value = simulated_map(rng, 10000, 50000, accuracy, 0.99, 1000)
        print(f"cifar10-2 (mAP@1000):   accuracy {accuracy:.2f} -> mAP {value:.3f}")


if __name__ == "__main__":
    main()
