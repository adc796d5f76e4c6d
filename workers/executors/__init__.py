"""Step executors: each runs one kind of step and reports an outcome."""

from workers.executors.base import Executor, LogEmitter, StepOutcome
from workers.executors.call import Middleware, Proceed, StepCall
from workers.executors.calls import AmqpExecutor, HttpExecutor
from workers.executors.chain import DEFAULT_MIDDLEWARE, ExecutorChain
from workers.executors.container import ContainerExecutor, ContainerRuntime
from workers.executors.process import ProcessExecutor
from workers.executors.python import PythonExecutor

__all__ = [
    "DEFAULT_MIDDLEWARE",
    "AmqpExecutor",
    "ContainerExecutor",
    "ContainerRuntime",
    "Executor",
    "ExecutorChain",
    "HttpExecutor",
    "LogEmitter",
    "Middleware",
    "Proceed",
    "ProcessExecutor",
    "PythonExecutor",
    "StepCall",
    "StepOutcome",
    "default_executors",
]


def default_executors(
    worker: str = "", runtime: ContainerRuntime | None = None
) -> dict[str, Executor]:
    process = ProcessExecutor(worker=worker)
    return {
        "script": process,
        "command": process,
        "python": PythonExecutor(),
        "container": ContainerExecutor(runtime, worker=worker),
        "http": HttpExecutor(),
        "amqp": AmqpExecutor(),
    }
