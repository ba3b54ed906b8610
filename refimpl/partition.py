"""How one problem's work is cut into pieces: by the problem's sizes, never by the thread count.

Threads (`revlearn.threads`) share the pieces out; each piece is computed the same way whichever
thread computes it, and the pieces are combined in a fixed order. So an answer depends on these
rules and on nothing else, and an outside implementation that wants revlearn's bits follows them:

rows    The N rows of a batch (or of the validation set) are cut into k = ceil(N / ROWS)
        consecutive chunks of nearly equal size: chunk c holds rows [start_c, start_{c+1}) with
        start_c = c q + min(c, r), q = N div k, r = N mod k (the first r chunks have one row more).
        Each chunk's sums over its rows (the loss, the gradient, the Hessian-vector product) are
        computed by matrix products on the chunk alone and by sums over its rows in increasing
        order; the chunks' sums are then added in chunk order: ((s_0 + s_1) + s_2) + ...
lanes   The P lanes of the information buffer (one per parameter) are cut into blocks of LANES
        consecutive lanes (the last one shorter); each block has its own stack of words.

ROWS = 100 keeps the products efficient (a 100-row chunk of the paper's 784-50-50-50-10 net costs
the same per row as the whole 200-row batch in one product) while a batch of 200 gives two
threads a chunk each; LANES = 4096 keeps a block's lane states, values and weights in the
first-level cache and gives two threads 6 and 5 of the 11 blocks of that net.
"""

import numpy as np

ROWS = 100
LANES = 4096


def row_chunks(N):
    """The starts of the chunks of N rows and N itself, shape (k + 1,): chunk c is
    rows[starts[c]:starts[c + 1]]."""
    k = -(-N // ROWS)
    q, r = divmod(N, k)
    c = np.arange(k + 1)
    return c * q + np.minimum(c, r)


def lane_blocks(P):
    """The number of blocks of LANES lanes that P lanes make (the last one may be shorter)."""
    return -(-P // LANES)
