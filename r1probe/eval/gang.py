"""Several benchmarks' generations served by shared engine calls.

Decoding a token reads every weight once whatever the number of rows, so on a CPU a batch of 16 rows
costs about what one of 128 does: a benchmark of 24 maths items that generates 256 tokens alone runs
at a fraction of the engine's throughput. :func:`run_together` runs each benchmark's loop in its own
thread; their ``generate`` calls meet in a :class:`Gang`, which waits until every benchmark still
running has asked (or finished) and then runs all the requests as one call of the engine
(``generate_many``: each request keeps its own token budget and early-stop rule, and finished rows
are replaced by waiting ones). Scored kinds (log-likelihood, NLL) run directly in their thread
under the gang's compute lock, so at most one forward pass runs at a time. The requests of a shared call are
ordered by benchmark, not by thread timing, so a rerun makes the same batches.
"""

from __future__ import annotations

import threading
from typing import Callable, Sequence

from r1probe.errors import R1ProbeError


class Gang:
    """Meeting point of ``members`` threads' ``generate`` calls on one engine."""

    def __init__(self, engine, members: int, progress: Callable[[str], None] | None = None):
        self.engine = engine
        #: ``progress("generate: N/TOTAL")`` as the replies of a shared call finish
        self.progress = progress
        self.live = int(members)
        self._cv = threading.Condition()
        self._queue: dict[int, dict] = {}
        #: held by every forward pass a member starts (a shared call, a scoring call): one at a time,
        #: and a steering plan's hooks are never registered twice on the model
        self.compute = threading.Lock()
        self.calls = 0  # shared engine calls made

    def member(self, index: int, engine) -> "GangMember":
        """The engine view member ``index`` uses (its own engine's settings, shared calls)."""
        return GangMember(self, index, engine)

    def submit(self, index: int, requests: Sequence, max_new_tokens: int | None, done) -> list[str]:
        entry = {"call": (list(requests), max_new_tokens, done), "result": None, "error": None, "ready": False}
        with self._cv:
            self._queue[index] = entry
            self._maybe_run()
            while not entry["ready"]:
                self._cv.wait()
        if entry["error"] is not None:
            raise entry["error"]
        return entry["result"]

    def leave(self) -> None:
        """A member finished (or failed): the others no longer wait for it."""
        with self._cv:
            self.live -= 1
            self._maybe_run()

    def _maybe_run(self) -> None:
        # called with the lock held; the members in the queue are all blocked, the rest have left or
        # are scoring, so running the engine here cannot overlap another forward pass of theirs
        if not self._queue or len(self._queue) < self.live:
            return
        order = sorted(self._queue)
        entries = [self._queue[i] for i in order]
        self._queue = {}
        try:
            kw = {}
            if self.progress is not None:
                say = self.progress
                kw["progress"] = lambda n, total: say(f"generate: {n}/{total}")
            with self.compute:
                results = self.engine.generate_many([e["call"] for e in entries], **kw)
            for e, r in zip(entries, results):
                e["result"] = r
        except BaseException as err:  # noqa: BLE001 - every waiting member gets the error
            for e in entries:
                e["error"] = err
        self.calls += 1
        for e in entries:
            e["ready"] = True
        self._cv.notify_all()


class GangMember:
    """An engine whose ``generate`` goes through the gang; everything else is its own engine's."""

    def __init__(self, gang: Gang, index: int, engine):
        self._gang, self._index, self._engine = gang, index, engine

    #: engine methods that run forward passes outside ``generate``
    SCORING = ("target_nll", "choice_logprobs", "gates_open")

    def __getattr__(self, name):
        attr = getattr(self._engine, name)
        if name in self.SCORING and callable(attr):
            def locked(*a, **kw):
                with self._gang.compute:
                    return attr(*a, **kw)
            return locked
        return attr

    def generate(self, requests, max_new_tokens: int | None = None, done=None) -> list[str]:
        return self._gang.submit(self._index, requests, max_new_tokens or self._engine.max_new_tokens, done)

    def for_sample(self, k: int) -> "GangMember":
        """Greedy engines draw every sample alike (see ``HFEngine.for_sample``): this member itself."""
        return self


def can_share(engines: Sequence) -> bool:
    """True when every engine is greedy and can join the first one's calls (``generate_many`` and
    ``shares_calls_with``). Sampling engines never share: each sample has its own seed."""
    if len(engines) < 2 or any(getattr(e, "temperature", 1.0) != 0 for e in engines):
        return False
    first = engines[0]
    return hasattr(first, "generate_many") and all(
        getattr(first, "shares_calls_with", lambda e: False)(e) for e in engines[1:])


def run_together(engines: Sequence, run: Callable, lead: int = 0,
                 progress: Callable[[str], None] | None = None) -> list:
    """``run(i, view_i)`` for every engine in its own thread, ``view_i`` engine ``i`` whose generations go
    through one :class:`Gang` on ``engines[lead]`` (whose rows in flight the shared calls use; ``progress``
    gets ``"generate: N/TOTAL"`` as their replies finish). Returns each run's result in order; the first
    error (in order) is raised after every thread has ended."""
    engines = list(engines)
    if not can_share(engines):
        raise R1ProbeError("these engines cannot share generation calls (different model, plan or sampling)")
    gang = Gang(engines[lead], len(engines), progress)
    out: list = [None] * len(engines)
    errors: list = [None] * len(engines)

    def work(i: int) -> None:
        try:
            out[i] = run(i, gang.member(i, engines[i]))
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            errors[i] = e
        finally:
            gang.leave()

    threads = [threading.Thread(target=work, args=(i,), name=f"r1probe-eval-{i}", daemon=True)
               for i in range(len(engines))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in errors:
        if e is not None:
            raise e
    return out
