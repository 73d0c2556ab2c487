"""Part 2, exercise 1: docs/minimal.py refusing a second connection with an Id in use.

app.py does the opposite (the newer connection takes the Id over, and the older is told with
4000); this answer shows the other policy, on step one. Run it with --port=8888.
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

# Client Id -> {"id": Id, "object": MyWebSocketHandler}. Only the IOLoop's thread touches it.
clients = {}


class MyWebSocketHandler(tornado.websocket.WebSocketHandler):
    def prepare(self):
        self.client_id = self.get_argument("Id")  # before the handshake: no Id, a 400
        if self.client_id in clients:  # still before the handshake: an HTTP status says why
            raise tornado.web.HTTPError(409, reason="Id in use")

    def open(self):
        clients[self.client_id] = {"id": self.client_id, "object": self}

    def on_message(self, message):
        logging.info("Message from %r: %r", self.client_id, message)

    def on_close(self):
        if clients.get(self.client_id, {}).get("object") is self:  # not a newer one's entry
            del clients[self.client_id]


async def send_to_all(text):
    """Runs on the IOLoop's thread, where the SendThread's add_callback puts it."""
    writes = []
    for entry in list(clients.values()):
        with contextlib.suppress(tornado.websocket.WebSocketClosedError):  # closing already
            writes.append(entry["object"].write_message(text))
    await asyncio.gather(*writes, return_exceptions=True)  # a peer that is gone fails here


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
            # The thread's only contact with the loop: add_callback is safe from any thread.
            self.io_loop.add_callback(send_to_all, str(datetime.datetime.now()))


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
