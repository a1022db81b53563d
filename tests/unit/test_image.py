"""The state image (core/image.py): what load refuses, and the two versions
it reads. Round trips of every kind of state are the core harness's (an
image every few records); the golden files pin the formats."""

import msgspec
import pytest

from leash.broker.core import CoreConfig, State, apply, canonical, check_invariants, image
from leash.broker.core import records as R
from leash.broker.core.jobs import Job

ARGS = msgspec.Raw(msgspec.msgpack.encode([1, 2]))


def a_state(**config: int) -> State:
    state = State(CoreConfig(**config))
    apply(state, R.Booted(1, 1))
    jobs = [
        R.NewJob(f"j{n}", f"q{n % 2}", "t", ARGS, n % 3, 3, 1000, None, 1, None) for n in range(12)
    ]
    apply(state, R.JobsPushed(jobs, 1))
    return state


def chunks_of(state: State) -> list[image.Chunk]:
    return [image.chunk_decoder.decode(image.chunk_encoder.encode(c)) for c in image.dump(state)]


def refused(chunks: list[image.Chunk], why: str) -> None:
    with pytest.raises(image.ImageError, match=why):
        image.load(chunks, CoreConfig())


def test_an_image_starts_with_one_head_of_a_version_this_broker_reads() -> None:
    chunks = chunks_of(a_state())
    refused(chunks[1:], "does not start with its head")
    refused([*chunks, chunks[0]], "one head")
    refused([image.ImageHead(4, 1, 1), *chunks[1:]], "version 4 is not supported")


def test_a_version_2_image_names_its_jobs_names_once_and_first() -> None:
    chunks = chunks_of(a_state())
    names = next(c for c in chunks if isinstance(c, image.NamesImage))
    packed = next(c for c in chunks if isinstance(c, image.PackedJobsImage))
    refused([chunks[0], packed, names], "come after the names")
    refused([chunks[0], image.JobsImage([]), names], "jobs come before the names")
    refused([chunks[0], names, names, packed], "the names come once")
    refused([image.ImageHead(1, 1, 1), names], "in version 2 on")
    refused([image.ImageHead(1, 1, 1), packed], "in version 2 on")


def test_a_version_2_chunk_of_packed_jobs_that_does_not_add_up_is_refused() -> None:
    chunks = chunks_of(a_state())
    head, names = chunks[0], next(c for c in chunks if isinstance(c, image.NamesImage))
    packed = next(c for c in chunks if isinstance(c, image.PackedJobsImage))
    assert packed.state == "ready" and len(packed.ids) > 1

    def changed(**fields: object) -> list[image.Chunk]:
        return [head, names, msgspec.structs.replace(packed, **fields)]

    refused([head, names, packed, packed], "appears twice")
    refused(changed(jobs=packed.jobs[1:]), "ids for")
    refused(changed(state="leased"), "leased jobs")
    refused(changed(keys_ms=[1] * len(packed.ids)), "times")
    refused(changed(state="dead"), "times")
    refused(changed(priority=99), "one priority")
    other = names.names.index("q1" if names.names[packed.queues[0]] == "q0" else "q0")
    refused(changed(queues=[other, *packed.queues[1:]]), "one queue")
    refused(changed(types=[len(names.names)] * len(packed.ids)), "names nothing")
    refused(changed(types=[-1] * len(packed.ids)), "names nothing")


def test_a_version_1_image_of_full_jobs_loads_into_packed_jobs() -> None:
    state = a_state()
    jobs = sorted((state.jobs[job_id] for job_id in state.jobs), key=lambda job: job.id)
    v1 = [image.ImageHead(1, state.epoch, state.counter), image.JobsImage(jobs)]
    loaded = image.load(v1, CoreConfig())
    assert check_invariants(loaded) == []
    assert all(isinstance(loaded.jobs.stored(job_id), bytes) for job_id in loaded.jobs)
    assert {job_id: loaded.jobs[job_id] for job_id in loaded.jobs} == {j.id: j for j in jobs}


def test_dumping_a_state_with_recent_jobs_changes_nothing_in_it() -> None:
    state = a_state()  # every job recent: a Job object, no name numbered yet
    assert all(isinstance(state.jobs.stored(job_id), Job) for job_id in state.jobs)
    before = canonical(state), list(state.jobs.names.names)
    loaded = image.load(chunks_of(state), CoreConfig())
    assert (canonical(state), list(state.jobs.names.names)) == before
    assert canonical(loaded) == canonical(state)
    assert sorted(filter(None, loaded.jobs.names.names)) == ["q0", "q1", "t"]
