"""Journal frames (format v2) under random writes and random cuts.

Records are written as a broker writes them: a loop turn's requests each
encode their records into the turn's batch (``Journal.encode_into``), so
they share frames, cut at ``FRAME_TARGET_BYTES``; each turn is one append.
Whatever the turns, sizes and frame boundaries: recovery gives back every
record in order, numbered without a gap; and a cut of the file at any byte
keeps exactly the records of the frames wholly before it, reports the cut
from the first record it drops, and a later append survives a restart.
"""

import itertools
import os
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st

from leash.broker.core import records as R
from leash.broker.core.records import frame_decoder
from leash.broker.journal import format as F
from leash.broker.journal.disk import OsDisk
from leash.broker.journal.log import Journal, WriteBuffer
from tests.journal_kit import names, paused, read_back, read_file, record_offsets, write_file
from tests.tier import scaled

# A turn: its requests, each the sizes of its records (name lengths: up to
# ~20 kB, so a few records pass the 64 KiB frame target).
turns_strategy = st.lists(
    st.lists(st.lists(st.sampled_from([0, 10, 300, 20_000]), min_size=1, max_size=3), max_size=6),
    min_size=1,
    max_size=8,
)


def _write(directory: str, turns: list[list[list[int]]]) -> list[R.Record]:
    journal = Journal(directory, OsDisk())
    journal.open(1, None, 1)
    written: list[R.Record] = []
    for turn in turns:
        batch = WriteBuffer()
        for request in turn:
            records = [
                R.QueuePaused(queue=f"q{len(written) + i}-" + "x" * size)
                for i, size in enumerate(request)
            ]
            journal.encode_into(records, batch)
            written += records
        if batch:
            journal.append(batch.close(), journal.next_seq - 1)
    journal.sync()
    journal.close()
    return written


def _kept_before(data: bytes) -> list[int]:
    """For each frame offset of a segment (and its end): how many records
    lie wholly before it."""
    offsets = record_offsets(data)
    kept = [0]
    for start, end in itertools.pairwise(offsets):
        payload = data[start + F.RECORD_HEADER_BYTES : end]
        kept.append(kept[-1] + len(frame_decoder.decode(payload)))
    return kept


@settings(max_examples=scaled(40), deadline=None)
@given(turns=turns_strategy, where=st.floats(min_value=0, max_value=1))
def test_every_record_comes_back_and_a_cut_keeps_the_whole_frames_before_it(
    turns: list[list[list[int]]], where: float
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        written = _write(directory, turns)
        seen, recovered = read_back(directory)
        assert seen == written and recovered.next_seq == len(written) + 1
        (segment,) = [os.path.join(directory, n) for n in names(directory) if n.endswith(".log")]
        data = read_file(segment)
        offsets = record_offsets(data)
        before = _kept_before(data)
        cut = offsets[0] + int(where * (len(data) - offsets[0]))
        frame = max(i for i, offset in enumerate(offsets) if offset <= cut)
        write_file(segment, data[:cut])
        seen, recovered = read_back(directory)
        assert seen == written[: before[frame]], (cut, offsets)
        if cut == offsets[frame]:
            assert recovered.notes == []
        else:
            (note,) = recovered.notes
            assert f"from seq {before[frame] + 1} on cut" in note, note
        assert os.path.getsize(segment) == offsets[frame]
        journal = Journal(directory, OsDisk())
        journal.open(recovered.next_seq, recovered.segments[-1], 2)
        journal.append(journal.encode(paused(1, start=999)), journal.next_seq - 1)
        journal.close()
        again, _ = read_back(directory)
        assert again == [*written[: before[frame]], *paused(1, start=999)]
