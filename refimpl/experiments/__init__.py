"""The paper's experiments as presets, one command each: ``revlearn run NAME``.

Each preset module defines DESCRIPTION, ``default_meta_iters(options)`` and a ``Job(options)``
with: ``unit`` (what one step is), ``n_steps``, ``headline``, ``initial_state()``,
``step(state, client) -> (state, record)`` (client None, or a dask client for the step's
independent work), ``state_arrays(state)`` / ``state_from_arrays(arrays)`` (the
checkpoint), ``progress(record)`` (one line) and ``finish(state, records, out, plt) ->
(summary, table, files)``. Options are a JSON dict: preset, meta_iters, seed, backend, threads,
paper, small, mnist_dir, optimizer, meta_batch, meta_step_decay, draws, knots, fresh_draws
(backend and threads change the speed, never the results); a preset may define
``default_meta_step_decay(options)`` (else the meta step is constant unless --meta-step-decay).
`runner` does the loop, the checkpoints and Ctrl-C; `cli` the command line.
"""

from . import chaos, data, l2, omniglot, schedules

PRESETS = {"schedules": schedules, "l2": l2, "data": data, "omniglot": omniglot, "chaos": chaos}
DEFAULT_PRESET = "schedules"
