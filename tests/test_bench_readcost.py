"""bench.readcost times what it says: each reader turns the frame into exactly one Twilio message."""

from __future__ import annotations

import json

from wsproto.connection import Connection, ConnectionType
from wsproto.events import TextMessage

from bench import readcost


def test_the_frame_is_a_whole_masked_twilio_media_message() -> None:
    conn = Connection(ConnectionType.SERVER)
    conn.receive_data(readcost.twilio_frame())
    (event,) = conn.events()
    assert isinstance(event, TextMessage) and event.message_finished
    assert json.loads(event.data)["event"] == "media"


def test_the_wsproto_reader_takes_one_message_per_frame_again_and_again() -> None:
    feed, frame = readcost.wsproto_reader(), readcost.twilio_frame()
    for _ in range(100):
        feed(frame)  # raises ValueError unless exactly one event comes out
