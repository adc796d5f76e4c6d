"""The pure core: fold events into run state, decide what to do next. No I/O, no clock."""

from engine.state.decide import decide
from engine.state.fold import fold, new_state
from engine.state.model import Instance, Node, RunState
from engine.state.replay import replay
from engine.state.settle import settle

__all__ = ["Instance", "Node", "RunState", "decide", "fold", "new_state", "replay", "settle"]
