"""Part 1, exercise 1: docs/unsafe.py with a lock around every use of ``clients``. It fails
just the same: run ``python docs/churn.py docs/answers/part1_lock.py``.

The lock keeps the two threads out of ``clients`` at the same time, but the SendThread still
calls write_message(), which belongs to the IOLoop's thread, and no lock of ours changes that.
"""

import asyncio
import contextlib
import datetime
import logging
import math
import threading
import time

import tornado.ioloop
import tornado.web
import tornado.websocket
from tornado.options import define, options, parse_command_line

define("port", default=8888, help="run on the given port", type=int)
define("interval", default=1.0, help="seconds between ticks", type=float)

# Client Id -> {"id": Id, "object": MyWebSocketHandler}. Both threads touch it, each holding
# the lock.
clients = {}
lock = threading.Lock()


class MyWebSocketHandler(tornado.websocket.WebSocketHandler):
    def prepare(self):
        self.client_id = self.get_argument("Id")  # before the handshake: no Id, a 400

    def open(self):
        with lock:
            clients[self.client_id] = {"id": self.client_id, "object": self}

    def on_message(self, message):
        logging.info("Message from %r: %r", self.client_id, message)

    def on_close(self):
        with lock:
            if clients.get(self.client_id, {}).get("object") is self:  # not a newer one's entry
                del clients[self.client_id]


def send_to_all(text):
    """Runs on the SendThread, holding the lock: the dict is safe, the handlers are not."""
    with lock:
        for entry in clients.values():
            entry["object"].write_message(text)


class SendThread(threading.Thread):
    def __init__(self, io_loop, interval):
        super().__init__(daemon=True)  # so that it never keeps the process alive
        self.io_loop = io_loop
        self.interval = interval

    def run(self):
        # Tick n is due at n * interval on the wall clock (the turn of the second by default),
        # a target that owes nothing to how long earlier ticks took: nothing drifts.
        tick = math.floor(time.time() / self.interval)
        while True:
            tick += 1
            while (delay := tick * self.interval - time.time()) > 0:
                time.sleep(delay)
            # Still the bug: the thread writes to the sockets itself, lock or no lock.
            send_to_all(str(datetime.datetime.now()))


async def main():
    app = tornado.web.Application([(r"/websocket", MyWebSocketHandler)])
    app.listen(options.port, "127.0.0.1")
    logging.info("Listening on http://127.0.0.1:%d/", options.port)
    SendThread(tornado.ioloop.IOLoop.current(), options.interval).start()
    await asyncio.Event().wait()  # serve until Ctrl-C


if __name__ == "__main__":
    parse_command_line()
    with contextlib.suppress(KeyboardInterrupt):  # the daemon thread ends with the process
        asyncio.run(main())
