"""The transforms between the sources and the journal sink, per container.

Each step is small, pure and knows nothing of the others; `TransformChain` (chain.py) runs them
in order: multiline -> rate limit -> JSON -> priority detection. Settings come from
`[transforms]` in the config, overridden per container by labels `journald-bridge.<option>=value`
for the options the operator allows (`transforms.label_overrides`); `build_chain` (build.py)
puts a container's chain together.

Labels and log lines are hostile input: `build_chain` never raises, a bad label is reported
once and that transform runs as the operator set it or not at all; `process` and `tick` never
raise because of a record, and the memory and time one container can make them use are
bounded (see each module's invariants). Nothing here reads a clock or does I/O.
"""

from bridge.transforms.build import LABEL_PREFIX, build_chain
from bridge.transforms.chain import TransformChain
from bridge.transforms.events import (
    DROP_REASONS,
    NO_EVENTS,
    STEPS,
    NoEvents,
    ReportError,
    TransformEvents,
)

__all__ = [
    "DROP_REASONS",
    "LABEL_PREFIX",
    "NO_EVENTS",
    "STEPS",
    "NoEvents",
    "ReportError",
    "TransformChain",
    "TransformEvents",
    "build_chain",
]
