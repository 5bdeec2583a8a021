"""LayerFeed: the byte stream from a layer's download to the thread that unpacks it."""

import threading

import pytest

from ketch.images.feed import FeedBroken, LayerFeed


def test_feed_reads_in_order() -> None:
    feed = LayerFeed(100)
    feed.put(b"abc")
    feed.put(b"def")
    feed.close()
    assert feed.read(4) == b"abcd"
    assert feed.read(4) == b"ef"
    assert feed.read(4) == b""


def test_feed_read_all() -> None:
    feed = LayerFeed(100)
    feed.put(b"abc")
    feed.close()
    assert feed.read() == b"abc"


def test_feed_peek_keeps_bytes() -> None:
    feed = LayerFeed(100)
    feed.put(b"\x1f")
    feed.put(b"\x8b\x08\x00rest")
    assert feed.peek(4) == b"\x1f\x8b\x08\x00"
    assert feed.read(6) == b"\x1f\x8b\x08\x00re"


def test_feed_peek_across_chunks() -> None:
    feed = LayerFeed(100)
    for byte in b"abcdefgh":
        feed.put(bytes([byte]))
    assert feed.peek(4) == b"abcd"
    assert feed.read() == b"abcdefgh"


def test_feed_peek_short_blob() -> None:
    feed = LayerFeed(100)
    feed.put(b"ab")
    feed.close()
    assert feed.peek(4) == b"ab"


def test_feed_break_raises() -> None:
    feed = LayerFeed(100)
    feed.put(b"abc")
    feed.break_off("the download started over")
    with pytest.raises(FeedBroken, match="started over"):
        feed.read(1)


def test_feed_overflow_breaks() -> None:
    feed = LayerFeed(4)
    feed.put(b"abc")
    feed.put(b"de")
    assert feed.broken
    with pytest.raises(FeedBroken, match="more than 4 bytes behind"):
        feed.read(1)


def test_feed_break_after_close_ignored() -> None:
    feed = LayerFeed(100)
    feed.put(b"abc")
    feed.close()
    feed.break_off("the download of the layer failed")
    assert feed.read() == b"abc"


def test_feed_reader_waits_for_writer() -> None:
    feed = LayerFeed(100)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(feed.read(3)))
    reader.start()
    feed.put(b"xyz")
    reader.join(timeout=30)
    assert received == [b"xyz"]


def test_feed_break_wakes_reader() -> None:
    feed = LayerFeed(100)
    errors: list[Exception] = []

    def read() -> None:
        try:
            feed.read(1)
        except FeedBroken as error:
            errors.append(error)

    reader = threading.Thread(target=read)
    reader.start()
    feed.break_off("the pull was cancelled")
    reader.join(timeout=30)
    assert len(errors) == 1


def test_feed_read1_one_chunk() -> None:
    feed = LayerFeed(100)
    feed.put(b"abc")
    feed.put(b"defgh")
    feed.close()
    assert feed.read1(100) == b"abc"
    assert feed.read1(2) == b"de"
    assert feed.read1() == b"fgh"
    assert feed.read1() == b""


def test_feed_empty_chunk_not_end() -> None:
    feed = LayerFeed(100)
    feed.put(b"")
    feed.put(b"abc")
    assert feed.read1() == b"abc"


def test_feed_break_after_close_forced() -> None:
    feed = LayerFeed(100)
    feed.put(b"abc")
    feed.close()
    feed.break_off("the pull was cancelled", even_if_closed=True)
    with pytest.raises(FeedBroken, match="cancelled"):
        feed.read1()
