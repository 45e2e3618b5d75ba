"""Train the vocal-emotion descriptor on RAVDESS and print its accuracy on held-out actors.

Reads a dataset made by ``benchmarks/ravdess_prepare.py`` (mer's own acoustic features, the ones
``analyze`` computes, or with ``--audio-features whisper`` Whisper's encoder states); fits a
standardisation + multinomial logistic regression (:mod:`mercli.features.vocal_emotion`) on the
train actors (1-16) for each regularisation strength, keeps the one with the best accuracy on the
valid actors (17-20), and prints that model's accuracy on valid and on the test actors (21-24), per
class too. ``--out`` writes its weights as JSON (the packaged file is
``mercli/weights/vocal_emotion/classifier.json``)::

    python benchmarks/vocal_emotion_train.py /data/ravdess_prepared/ravdess.pkl \\
        --out mercli/weights/vocal_emotion/classifier.json
    python benchmarks/vocal_emotion_train.py /data/ravdess_whisper_trim/ravdess.pkl \\
        --out mercli/weights/vocal_emotion/classifier_whisper.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0)  # inverse L2 strengths tried, chosen on the valid actors


def features(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    from mercli.data.mmsa import load_mmsa
    from mercli.data.ravdess import parse_id
    from mercli.features.vocal_emotion import pooled_features

    data = load_mmsa(path).split(split)
    x, y = [], []
    for i in range(len(data)):
        sample = data[i]
        x.append(pooled_features(sample.features["audio"].numpy()))
        y.append(parse_id(sample.id).emotion)
    return np.array(x), np.array(y)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path, help="ravdess.pkl from ravdess_prepare.py")
    parser.add_argument("--out", type=Path, help="write the chosen weights here (JSON)")
    args = parser.parse_args(argv)

    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from mercli.features.vocal_emotion import VocalEmotionClassifier

    started = time.perf_counter()
    x_train, y_train = features(args.dataset, "train")
    x_valid, y_valid = features(args.dataset, "valid")
    x_test, y_test = features(args.dataset, "test")
    scaler = StandardScaler().fit(x_train)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)

    def fitted(c: float) -> LogisticRegression:
        model = LogisticRegression(C=c, max_iter=5000)
        return model.fit((x_train - scaler.mean_) / scale, y_train)

    def accuracy(model: LogisticRegression, x: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(model.predict((x - scaler.mean_) / scale) == y))

    valid = {c: accuracy(fitted(c), x_valid, y_valid) for c in C_GRID}
    best = max(C_GRID, key=lambda c: valid[c])
    model = fitted(best)
    classifier = VocalEmotionClassifier(
        tuple(str(c) for c in model.classes_),
        scaler.mean_,
        scale,
        model.coef_,
        model.intercept_,
    )
    # the numpy inference reproduces scikit-learn's
    ours = np.array(classifier.classes)[classifier.probabilities(x_test).argmax(axis=1)]
    assert np.array_equal(ours, model.predict((x_test - scaler.mean_) / scale))
    load = os.getloadavg()
    majority = max(np.mean(y_test == e) for e in classifier.classes)
    print(f"RAVDESS vocal emotion, {len(classifier.classes)} classes (majority {majority:.3f})")
    print("valid accuracy per C: " + ", ".join(f"{c:g} {a:.3f}" for c, a in valid.items()))
    print(
        f"chosen C {best:g}: train actors {accuracy(model, x_train, y_train):.3f} "
        f"({len(y_train)} clips), valid actors {valid[best]:.3f} ({len(y_valid)}), "
        f"test actors {np.mean(ours == y_test):.3f} ({len(y_test)})"
    )
    print(
        "test recall per class: "
        + ", ".join(f"{e} {np.mean(ours[y_test == e] == e):.2f}" for e in classifier.classes)
    )
    print(f"{time.perf_counter() - started:.1f} s, load {load[0]:.1f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(classifier.to_dict(), separators=(",", ":"))
        args.out.write_text(text + "\n", encoding="utf-8")
        print(f"wrote {args.out} ({len(text) // 1024} KiB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
