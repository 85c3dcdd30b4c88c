"""The optimizers' update rules, compiled once for every model.

``update(kind, p, g, state, t, hyper)`` applies one step of optimizer ``KINDS[kind]`` to
the parameters ``p`` in place, given the batch's mean gradient ``g``, the per-parameter
``state`` rows, the step number ``t`` (from 1) and the hyperparameters ``hyper`` (float64,
in the order of the optimizer class's fields: lr, weight_decay, l1, then its own). The
formulas are ``torch.optim``'s; scalars are computed in float64 (``1 - beta`` too, as torch
does) and converted to the parameters' dtype, so float32 models update in float32.

Adam and AMSGrad, whose state is two or three rows, run in loops of their own (``_adam``,
``_amsgrad``) over plain arrays with every choice made before the loop: such a loop
vectorizes. In the shared loop, the ``kind`` branch and the ``state[2]`` view inside it
kept it scalar (W3's Adam over 101,770 float32 parameters: 356 us per step there, 41 us
here). Such a loop is bound by the divider: the bias correction sqrt(1 - beta2^t) divides
torch's sqrt(v), here sqrt(v) is multiplied by its reciprocal (computed in float64), one
division fewer per entry (the denominator within an ulp of torch's); and with no penalty the
gradient is used as it is (torch's test too, so an infinite parameter does not make its
gradient NaN): 41 -> 29 us over W3's parameters. No fast-math.
"""

import math

from numba import njit, prange

#: Optimizer names (``Optimizer.template``) in the order of their ``kind`` numbers.
KINDS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adadelta", "adam", "amsgrad")


@njit(cache=True, error_model="numpy")
def _penalized(x, g, weight_decay, l1, one):
    """The gradient plus the L2 (weight_decay * x) and L1 (l1 * sign(x)) penalties' terms."""
    return g + weight_decay * x + l1 * ((x > 0) * one - (x < 0) * one)


@njit(cache=True, error_model="numpy")
def _moments(x, g, m, v, k, beta1, beta2, rest1, rest2, weight_decay, l1, one):
    """Adam's moments at entry k, stored and returned: m <- beta1 m + (1 - beta1) g,
    v <- beta2 v + (1 - beta2) g^2 (g with its penalties, if any: the test is the same for
    every k, so LLVM takes it out of the loop and keeps two loops)."""
    gk = _penalized(x, g[k], weight_decay, l1, one) if weight_decay or l1 else g[k]
    mk = beta1 * m[k] + rest1 * gk
    vk = beta2 * v[k] + rest2 * gk * gk
    m[k] = mk
    v[k] = vk
    return mk, vk


@njit(cache=True, error_model="numpy")
def _adam(p, g, m, v, beta1, beta2, rest1, rest2, step, unroot2, eps, weight_decay, l1, one):
    """m <- beta1 m + (1 - beta1) g; v <- beta2 v + (1 - beta2) g^2;
    theta <- theta - step m / (sqrt(v) unroot2 + eps), with the bias corrections
    step = lr / (1 - beta1^t) and unroot2 = 1 / sqrt(1 - beta2^t)."""
    for k in range(p.shape[0]):
        x = p[k]
        mk, vk = _moments(x, g, m, v, k, beta1, beta2, rest1, rest2, weight_decay, l1, one)
        p[k] = x - step * mk / (math.sqrt(vk) * unroot2 + eps)


@njit(cache=True, error_model="numpy")
def _amsgrad(p, g, m, v, v_max, beta1, beta2, rest1, rest2, step, unroot2, eps,
             weight_decay, l1, one):
    """Adam with the running maximum of v in the denominator."""
    for k in range(p.shape[0]):
        x = p[k]
        mk, vk = _moments(x, g, m, v, k, beta1, beta2, rest1, rest2, weight_decay, l1, one)
        top = max(v_max[k], vk)
        v_max[k] = top
        p[k] = x - step * mk / (math.sqrt(top) * unroot2 + eps)


@njit(cache=True, error_model="numpy")
def update(kind, p, g, state, t, hyper):
    """One step of optimizer ``KINDS[kind]`` (see the module docstring)."""
    T = p.dtype.type
    lr, weight_decay, l1 = T(hyper[0]), T(hyper[1]), T(hyper[2])
    one = T(1.0)
    if kind == 0:  # SGD: theta <- theta - lr g
        for k in range(p.shape[0]):
            x = p[k]
            p[k] = x - lr * _penalized(x, g[k], weight_decay, l1, one)
    elif kind == 1 or kind == 2:  # Momentum, Nesterov: v <- mu v + g
        mu = T(hyper[3])
        v = state[0]
        for k in range(p.shape[0]):
            x = p[k]
            gk = _penalized(x, g[k], weight_decay, l1, one)
            v[k] = gk if t == 1 else mu * v[k] + gk
            if kind == 1:  # theta <- theta - lr v
                p[k] = x - lr * v[k]
            else:  # theta <- theta - lr (g + mu v)
                p[k] = x - lr * (gk + mu * v[k])
    elif kind == 3:  # Adagrad: s <- s + g^2; theta <- theta - lr g / (sqrt(s) + eps)
        eps = T(hyper[3])
        s = state[0]
        for k in range(p.shape[0]):
            x = p[k]
            gk = _penalized(x, g[k], weight_decay, l1, one)
            s[k] += gk * gk
            p[k] = x - lr * gk / (math.sqrt(s[k]) + eps)
    elif kind == 4:  # RMSprop: s <- alpha s + (1 - alpha) g^2
        alpha, eps = T(hyper[3]), T(hyper[4])
        rest = T(1.0 - hyper[3])
        s = state[0]
        for k in range(p.shape[0]):
            x = p[k]
            gk = _penalized(x, g[k], weight_decay, l1, one)
            s[k] = alpha * s[k] + rest * gk * gk
            p[k] = x - lr * gk / (math.sqrt(s[k]) + eps)
    elif kind == 5:  # Adadelta
        rho, eps = T(hyper[3]), T(hyper[4])
        rest = T(1.0 - hyper[3])
        s = state[0]
        u = state[1]
        for k in range(p.shape[0]):
            x = p[k]
            gk = _penalized(x, g[k], weight_decay, l1, one)
            s[k] = rho * s[k] + rest * gk * gk
            d = math.sqrt(u[k] + eps) / math.sqrt(s[k] + eps) * gk
            u[k] = rho * u[k] + rest * d * d
            p[k] = x - lr * d
    else:  # Adam (kind 6) and AMSGrad (kind 7), with bias correction
        beta1, beta2, eps = T(hyper[3]), T(hyper[4]), T(hyper[5])
        step = T(hyper[0] / (1.0 - hyper[3] ** t))
        unroot2 = T(1.0 / math.sqrt(1.0 - hyper[4] ** t))
        rest1, rest2 = T(1.0 - hyper[3]), T(1.0 - hyper[4])
        if kind == 7:
            _amsgrad(p, g, state[0], state[1], state[2], beta1, beta2, rest1, rest2, step,
                     unroot2, eps, weight_decay, l1, one)
        else:
            _adam(p, g, state[0], state[1], beta1, beta2, rest1, rest2, step, unroot2, eps,
                  weight_decay, l1, one)


#: Parameter vectors from this long are updated by :func:`update_halves` in two halves at
#: once (a parallel region costs ~1.3 us; Adam over W3's 101,770 float32 values ~29 us).
HALVES_FROM = 1 << 15


@njit(cache=True, parallel=True, error_model="numpy")
def update_halves(kind, p, g, state, t, hyper):
    """:func:`update`, Adam's and AMSGrad's loops over two halves of a long parameter vector
    on two of Numba's threads (or one after the other on one): every entry is updated by
    itself, so the numbers are the same as :func:`update`'s. Other optimizers, and short
    vectors, go to :func:`update`."""
    n = p.shape[0]
    if kind < 6 or n < HALVES_FROM:
        update(kind, p, g, state, t, hyper)
        return
    T = p.dtype.type
    one = T(1.0)
    weight_decay, l1 = T(hyper[1]), T(hyper[2])
    beta1, beta2, eps = T(hyper[3]), T(hyper[4]), T(hyper[5])
    step = T(hyper[0] / (1.0 - hyper[3] ** t))
    unroot2 = T(1.0 / math.sqrt(1.0 - hyper[4] ** t))
    rest1, rest2 = T(1.0 - hyper[3]), T(1.0 - hyper[4])
    cut = n // 2 // 16 * 16
    for h in prange(2):
        lo, hi = (0, cut) if h == 0 else (cut, n)
        if kind == 7:
            _amsgrad(p[lo:hi], g[lo:hi], state[0, lo:hi], state[1, lo:hi], state[2, lo:hi],
                     beta1, beta2, rest1, rest2, step, unroot2, eps, weight_decay, l1, one)
        else:
            _adam(p[lo:hi], g[lo:hi], state[0, lo:hi], state[1, lo:hi], beta1, beta2, rest1,
                  rest2, step, unroot2, eps, weight_decay, l1, one)
