"""A cut-in detector: high accuracy can hide a low recall when positives are rare.

Synthetic highway data: for each neighbouring car, its lateral distance to our lane (m) and
its lateral speed towards us (m/s); about 9 % of the cars cut in. A logistic classifier
(bce_with_logits on the logit) is trained on a training split and scored on a test split with
sg.metrics: accuracy looks great while recall - the share of real cut-ins caught - is poor
(the lecture's 91 % / 50 % / 11 %). Lowering the decision threshold trades precision for
recall.

Run:  python examples/cutin_detector.py
"""

import numpy as np
import sympy as sp

import symgrad as sg

rng = np.random.default_rng(3)
n = 4000
cut = rng.random(n) < 0.09
dist = np.where(cut, rng.normal(1.6, 0.7, n), rng.normal(2.4, 0.7, n))
speed = np.where(cut, rng.normal(0.35, 0.4, n), rng.normal(0.0, 0.4, n))
label = cut.astype(float)
tr, te = slice(0, 3000), slice(3000, None)

w1, w2, b, d, v, y = sp.symbols("w1 w2 b d v y")
logit = w1 * d + w2 * v + b
model = sg.Model(loss=sg.losses.bce_with_logits(logit, y), params={w1: 0.0, w2: 0.0, b: 0.0},
                 data=[d, v, y], prediction=sg.sigmoid(logit), target=y)
hist = model.fit({d: dist[tr], v: speed[tr], y: label[tr]}, optimizer=sg.optim.Adam(lr=0.05),
                 epochs=300, verbose=0)
p = model.params
print(f"trained: logit = {p[w1]:+.3f}*dist {p[w2]:+.3f}*speed {p[b]:+.3f}, "
      f"train loss {hist.loss[-1]:.4f}")

prob = model.predict(data={d: dist[te], v: speed[te]})
truth = label[te]
print(f"test split: {truth.size} cars, {int(truth.sum())} cut-ins "
      f"({truth.mean():.1%}); always answering 'no cut-in' would score {1 - truth.mean():.1%}")
for t in (0.5, 0.2):
    acc = sg.metrics.accuracy(truth, prob, threshold=t)
    pre = sg.metrics.precision(truth, prob, threshold=t)
    rec = sg.metrics.recall(truth, prob, threshold=t)
    print(f"threshold {t}: accuracy {acc:.1%}  precision {pre:.1%}  recall {rec:.1%}")
