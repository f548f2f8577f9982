"""A channel's hl7apy validation, in worker processes the engine can kill.

hl7apy cannot be interrupted inside a thread, and a message dense in separators costs it
minutes and gigabytes; a thread of the engine running it also kept SIGTERM from stopping the
engine (the reactor's thread pool waits for its threads). So each validating channel gets a
small pool of :mod:`engine.channel.validation_worker` processes, fresh programs started
with ``spawnProcess`` (posix_spawn or fork + exec: no copy of the engine with its reactor keeps
running) on the first message that needs one. The reactor only writes the message to a pipe
and reads one line back.

A message above the channel's ceilings is refused before any worker sees it. A validation
that overruns ``timeout_s`` is refused and its worker killed; a worker that dies (its
``memory_mb`` reached) refuses its message. A fresh worker replaces either on demand.
Stopping the pool kills every worker at once, whatever it is doing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections import deque
from dataclasses import dataclass

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from engine.channel.config import Validation
from engine.channel.validation import ceiling_refusal
from engine.message import Message
from engine.message.ack import AckError

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0
"""A worker not ready by then (Python start-up and the hl7apy import take ~0.1 s) is killed."""


WORKER_STOPPED = AckError(207, "message validation failed: its worker stopped (memory limit?)")


class ValidationUnavailable(Exception):
    """No worker could validate the message (stopping, or none could start): answer AE, resend."""


@dataclass
class _Job:
    text: bytes
    done: defer.Deferred[list[AckError]]

    def answer(self, problems: list[AckError]) -> None:
        self.done.callback(problems)

    def fail(self, reason: str) -> None:
        self.done.errback(Failure(ValidationUnavailable(reason)))


class _Worker(ProcessProtocol):
    """One worker process: ready once hl7apy is loaded, then one job at a time."""

    def __init__(self, pool: ValidationPool) -> None:
        self.pool = pool
        self.ready = False
        self.job: _Job | None = None
        self.timer = None
        self.gone: defer.Deferred[None] = defer.Deferred()
        self._buffer = b""

    def outReceived(self, data: bytes) -> None:
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            self.pool._line(self, line)

    def outConnectionLost(self) -> None:
        """The worker's end as far as the pool cares: its answers pipe closed (the process
        exited or was killed; the reactor reaps it on SIGCHLD, which an embedding reactor
        without signal handlers may never do, so its processEnded is not waited for)."""
        self.pool._ended(self)
        self.gone.callback(None)

    def cancel_timer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


class ValidationPool(Service):
    """``validator(message)`` for :class:`engine.screen.Screen`: a Deferred list of problems."""

    def __init__(self, reactor, channel: str, settings: Validation) -> None:
        self.reactor = reactor
        self.channel = channel
        self.settings = settings
        self._jobs: deque[_Job] = deque()
        self._workers: list[_Worker] = []
        self._dying: list[_Worker] = []
        self._stopping = False
        self.setName(f"{channel}/validation")

    def __call__(self, message: Message) -> defer.Deferred[list[AckError]]:
        refusal = ceiling_refusal(message, self.settings.max_bytes, self.settings.max_components)
        if refusal is not None:
            return defer.succeed([refusal])
        if self._stopping:
            return defer.fail(ValidationUnavailable("the engine is stopping"))
        job = _Job(message.text.encode("utf-8"), defer.Deferred())
        self._jobs.append(job)
        self._dispatch()
        return job.done

    def startService(self) -> None:
        super().startService()
        self._stopping = False

    def stopService(self) -> defer.Deferred[None]:
        """Kill every worker (a validation may never end on its own) and fail what waits."""
        super().stopService()
        self._stopping = True
        self._fail_waiting("the engine is stopping")
        for worker in list(self._workers):
            if worker.job is not None:
                worker.job.fail("the engine is stopping")
                worker.job = None
            self._kill(worker)
        return defer.gatherResults([worker.gone for worker in self._dying]).addCallback(lambda _: None)

    def worker_pids(self) -> list[int]:
        """The process ids of the live workers (for tests and diagnostics)."""
        return [worker.transport.pid for worker in self._workers]

    # Scheduling

    def _dispatch(self) -> None:
        for worker in self._workers:
            if not self._jobs:
                return
            if worker.ready and worker.job is None:
                self._assign(worker, self._jobs.popleft())
        starting = sum(1 for worker in self._workers if not worker.ready)
        while len(self._jobs) > starting and len(self._workers) < self.settings.workers:
            self._spawn()
            starting += 1

    def _spawn(self) -> None:
        settings = self.settings
        worker = _Worker(self)
        args = [
            sys.executable,
            "-m",
            "engine.channel.validation_worker",
            settings.level,
            settings.version or "-",
            str(settings.memory_mb),
            str(settings.timeout_s),
        ]
        try:
            self.reactor.spawnProcess(
                worker, sys.executable, args, env=dict(os.environ), childFDs={0: "w", 1: "r", 2: 2}
            )
        except OSError as error:
            log.error("channel %s: cannot start a validation worker: %s", self.channel, error)
            self._fail_waiting("no validation worker could start")
            return
        worker.timer = self.reactor.callLater(START_TIMEOUT_S, self._kill, worker)
        self._workers.append(worker)

    def _assign(self, worker: _Worker, job: _Job) -> None:
        worker.job = job
        worker.transport.writeSequence([len(job.text).to_bytes(4, "big"), job.text])
        worker.timer = self.reactor.callLater(self.settings.timeout_s, self._timed_out, worker)

    # Events from the workers

    def _line(self, worker: _Worker, line: bytes) -> None:
        worker.cancel_timer()
        if not worker.ready:
            worker.ready = line == b"ready"
            if not worker.ready:
                self._kill(worker)
            self._dispatch()
            return
        job, worker.job = worker.job, None
        try:
            answer = json.loads(line)
            problems = [AckError(code, text) for code, text in answer["problems"]]
        except (ValueError, TypeError, KeyError):
            answer, problems = {}, [WORKER_STOPPED]
            self._kill(worker)
        if answer.get("retiring"):
            log.warning(
                "channel %s: a validation reached the memory limit (%d MB); its worker is replaced",
                self.channel,
                self.settings.memory_mb,
            )
            self._retire(worker)
        if job is not None:
            job.answer(problems)
        self._dispatch()

    def _timed_out(self, worker: _Worker) -> None:
        worker.timer = None
        job, worker.job = worker.job, None
        log.warning(
            "channel %s: a validation ran longer than %gs; its worker is killed",
            self.channel,
            self.settings.timeout_s,
        )
        self._kill(worker)
        job.answer([AckError(207, f"message validation timed out after {self.settings.timeout_s:g}s")])
        self._dispatch()

    def _ended(self, worker: _Worker) -> None:
        worker.cancel_timer()
        if worker in self._dying:
            self._dying.remove(worker)
        else:
            self._workers.remove(worker)
            log.error("channel %s: a validation worker stopped unexpectedly", self.channel)
        if worker.job is not None:
            worker.job.answer([WORKER_STOPPED])
            worker.job = None
        if not worker.ready and not self._stopping:
            self._fail_waiting("no validation worker could start")
        self._dispatch()

    def _kill(self, worker: _Worker) -> None:
        """Kill at once (SIGKILL: hl7apy may be deep in C-level allocation); answers come
        from the caller, so the message is answered without waiting for the process to end."""
        if self._retire(worker):
            with contextlib.suppress(ProcessExitedAlready):  # then its processEnded is on its way
                worker.transport.signalProcess("KILL")

    def _retire(self, worker: _Worker) -> bool:
        """Take a worker out of service; False when it already was."""
        worker.cancel_timer()
        if worker not in self._workers:
            return False
        self._workers.remove(worker)
        self._dying.append(worker)
        return True

    def _fail_waiting(self, reason: str) -> None:
        while self._jobs:
            self._jobs.popleft().fail(reason)
