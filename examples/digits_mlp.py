"""A matrix model: a one-hidden-layer MLP classifying scikit-learn's 8x8 handwritten digits.

The network is written with SymPy matrices, a batch of n images at a time:

    S = tanh(X W1 + b1) W2 + b2             X: n x 64 pixels, W1: 64 x 32, W2: 32 x 10
    loss = softmax_cross_entropy(S, Y) + 0.5 * 1e-4 * (|W1|^2 + |W2|^2)

(the bias rows broadcast over the n rows, the cross-entropy is the mean over the rows).
symgrad turns it into flat NumPy-style forward/backward code, printed first, and trains it
with minibatch Adam in one compiled loop. Prints a line per epoch (loss, validation loss,
accuracy), the test accuracy, the compile time, and plots the loss curves (digits_loss.png).

Needs scikit-learn (for the data): pip install scikit-learn  (or: pip install ".[examples]")

Run:  python examples/digits_mlp.py
"""

import sys
import time

import numpy as np
import sympy as sp

import symgrad as sg

try:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
except ImportError:
    print("scikit-learn is not installed, and this example needs its digits data set: "
          "pip install scikit-learn (or pip install \".[examples]\"). Skipped.")
    sys.exit(0)

HIDDEN, CLASSES, EPOCHS, BATCH = 32, 10, 30, 64

# -- data: 1797 images of 8x8 pixels (0..16), scaled to [0, 1]; fixed, stratified splits ------
digits = load_digits()
pixels, labels = digits.data / 16.0, digits.target
X_rest, X_test, y_rest, y_test = train_test_split(pixels, labels, test_size=0.25,
                                                  random_state=0, stratify=labels)
X_train, X_val, y_train, y_val = train_test_split(X_rest, y_rest, test_size=0.2,
                                                  random_state=0, stratify=y_rest)
print(f"digits: {len(X_train)} train, {len(X_val)} validation, {len(X_test)} test images")

# -- the model ------------------------------------------------------------------------------
n = sp.Symbol("n", integer=True, positive=True)  # batch size: the rows of the data matrices
X = sp.MatrixSymbol("X", n, 64)
Y = sp.MatrixSymbol("Y", n, CLASSES)
W1, b1 = sp.MatrixSymbol("W1", 64, HIDDEN), sp.MatrixSymbol("b1", 1, HIDDEN)
W2, b2 = sp.MatrixSymbol("W2", HIDDEN, CLASSES), sp.MatrixSymbol("b2", 1, CLASSES)

hidden = sg.tanh(X * W1 + b1)
scores = hidden * W2 + b2
loss = sg.softmax_cross_entropy(scores, Y) + 0.5 * 1e-4 * (sg.l2(W1) + sg.l2(W2))

model = sg.Model(
    loss,
    params={W1: sg.init.xavier(64, HIDDEN, seed=0), b1: sg.init.zeros(1, HIDDEN),
            W2: sg.init.xavier(HIDDEN, CLASSES, seed=1), b2: sg.init.zeros(1, CLASSES)},
    data=[X, Y], optimizer=sg.optim.Adam(lr=1e-2), dtype="float64",
    prediction=sg.softmax(scores), target=Y)
print(model.listing(columns=True))


# -- training -----------------------------------------------------------------------------
def progress(epoch, logs):
    print(f"epoch {epoch + 1:2d}  loss {logs['loss']:.4f}  val loss {logs['val_loss']:.4f}  "
          f"accuracy {logs['accuracy']:.3f}  val accuracy {logs['val_accuracy']:.3f}")


t0 = time.perf_counter()
history = model.fit({X: X_train, Y: sg.one_hot(y_train, CLASSES)}, epochs=EPOCHS,
                    batch_size=BATCH, validation={X: X_val, Y: sg.one_hot(y_val, CLASSES)},
                    metrics=["accuracy"], callbacks=[progress], verbose=0)
fit_s = time.perf_counter() - t0
timings = model.timings
compile_s = timings["compile_s"]
how = "loaded from the cache" if timings.get("cache_hit") else "compiled"
print(f"stop_reason={history.stop_reason} after {len(history)} epochs")
print(f"compile time: {compile_s:.2f} s (trainer {how}; code generation "
      f"{timings['codegen_s']:.2f} s); training: {fit_s - compile_s:.2f} s for {len(history)} "
      "epochs, accuracy metrics included")

# -- test ---------------------------------------------------------------------------------
probabilities = model.predict(data={X: X_test})  # NumPy evaluation of softmax(scores)
test_accuracy = float(np.mean(np.argmax(probabilities, axis=1) == y_test))
print(f"test accuracy: {test_accuracy:.4f} ({int(round(test_accuracy * len(y_test)))}/"
      f"{len(y_test)} test images)")

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("matplotlib not installed: skipped the plot")
else:
    epochs = np.arange(1, len(history) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, history.loss, label="train")
    ax_loss.plot(epochs, history.val_loss, label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy + L2", yscale="log",
                title="digits MLP 64-32-10: loss")
    ax_loss.legend()
    ax_acc.plot(epochs, history.metrics["accuracy"], label="train")
    ax_acc.plot(epochs, history.val_metrics["accuracy"], label="validation")
    ax_acc.axhline(test_accuracy, color="gray", ls=":", label=f"test ({test_accuracy:.3f})")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    ax_acc.legend()
    fig.savefig("digits_loss.png", dpi=100, bbox_inches="tight")
    print("wrote digits_loss.png")
