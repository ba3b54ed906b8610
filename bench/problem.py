"""The benchmark problem: the paper's MNIST net (as examples/mnist_spec.json), any horizon T."""

import revlearn

SPEC = dict(layer_sizes=[784, 50, 50, 50, 10], activation="tanh", dataset="mnist",
            n_train=10000, n_valid=10000, n_iters=100, batch_size=200, seed=0,
            alpha=1.0, gamma=0.9, init_scale=0.1, l2=0.0001)

# about 10**6 parameters: 784 * 1150 + 1150 + 1150 * 80 + 80 + 80 * 10 + 10 = 995,640
BIG_LAYERS = [784, 1150, 80, 10]


# trained with Adam: torch.optim.Adam's defaults but the step size, 0.01 (the best constant of
# 0.001, 0.003, 0.01, 0.02, 0.03, 0.05 on `revlearn run schedules --optimizer adam`'s problem)
ADAM = dict(optimizer="adam", alpha=0.01, beta1=0.9, beta2=0.999, epsilon=1e-8)


def case(T, optimizer="momentum", **changes):
    """The MNIST problem with T steps, trained with momentum or Adam (other spec keys changed as
    given)."""
    spec = dict(SPEC, n_iters=T)
    if optimizer == "adam":
        del spec["gamma"]
        spec.update(ADAM)
    return revlearn.make_case(dict(spec, **changes))
