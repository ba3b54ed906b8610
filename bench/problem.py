"""The benchmark problem: the paper's MNIST net (as examples/mnist_spec.json), any horizon T."""

import revlearn

SPEC = dict(layer_sizes=[784, 50, 50, 50, 10], activation="tanh", dataset="mnist",
            n_train=10000, n_valid=10000, n_iters=100, batch_size=200, seed=0,
            alpha=1.0, gamma=0.9, init_scale=0.1, l2=0.0001)

# about 10**6 parameters: 784 * 1150 + 1150 + 1150 * 80 + 80 + 80 * 10 + 10 = 995,640
BIG_LAYERS = [784, 1150, 80, 10]


def case(T, **changes):
    """The MNIST problem with T steps (other spec keys changed as given)."""
    return revlearn.make_case(dict(SPEC, n_iters=T, **changes))
