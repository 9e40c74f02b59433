"""Random ids drawn a page at a time: as unique as ``os.urandom``, never shared across a fork."""

from __future__ import annotations

import os
import re
import threading

from aifr.audit import random_hex
from aifr.audit.record import new_record_id, seq_of_record_id


def test_ids_have_the_asked_size_and_never_repeat_across_many_pages() -> None:
    ids = [random_hex(16) for _ in range(5000)]  # 80,000 bytes: about 20 pages
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert re.fullmatch(r"[0-9a-f]{8192}", random_hex(4096))  # a whole page and more
    assert len(random_hex(5000)) == 10000


def test_threads_draw_their_own_ids() -> None:
    drawn: list[list[str]] = [[] for _ in range(4)]

    def draw(into: list[str]) -> None:
        into.extend(random_hex(8) for _ in range(2000))

    threads = [threading.Thread(target=draw, args=(into,)) for into in drawn]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for ids in drawn for i in ids]
    assert len(set(every)) == len(every) == 8000


def test_a_forked_child_does_not_hand_out_its_parents_next_ids() -> None:
    random_hex(8)  # the parent holds a partly used page
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write what it draws next, then leave at once
        os.close(read_end)
        os.write(write_end, "".join(random_hex(8) for _ in range(16)).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        child = pipe.read()
    os.waitpid(pid, 0)
    parent = "".join(random_hex(8) for _ in range(16))
    assert len(child) == len(parent) == 256
    assert child != parent


def test_record_ids_carry_their_seq_and_a_random_part() -> None:
    first, second = new_record_id(7), new_record_id(7)
    assert first != second
    assert seq_of_record_id(first) == seq_of_record_id(second) == 7
