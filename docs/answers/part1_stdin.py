"""Part 1, exercise 3: docs/minimal.py pushing each line typed into its terminal, not the time.

Reading a line blocks until one is typed, so it stays in a thread of its own, which hands each
line to the loop with add_callback, as the SendThread hands over the time. Run it with
--port=8888, then type a line and press Enter.
"""

import asyncio
import contextlib
import logging
import sys
import threading

import tornado.ioloop
import tornado.web
import tornado.websocket
from tornado.options import define, options, parse_command_line

define("port", default=8888, help="run on the given port", type=int)

# Client Id -> {"id": Id, "object": MyWebSocketHandler}. Only the IOLoop's thread touches it.
clients = {}


class MyWebSocketHandler(tornado.websocket.WebSocketHandler):
    def prepare(self):
        self.client_id = self.get_argument("Id")  # before the handshake: no Id, a 400

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


class LineThread(threading.Thread):
    """Read the lines typed on standard input, and hand each to the loop."""

    def __init__(self, io_loop):
        super().__init__(daemon=True)  # so that it never keeps the process alive
        self.io_loop = io_loop

    def run(self):
        for line in sys.stdin:  # blocks until a line comes; ends at end of input
            # The thread's only contact with the loop: add_callback is safe from any thread.
            self.io_loop.add_callback(send_to_all, line.rstrip("\n"))


async def main():
    app = tornado.web.Application([(r"/websocket", MyWebSocketHandler)])
    app.listen(options.port, "127.0.0.1")
    logging.info("Listening on http://127.0.0.1:%d/", options.port)
    LineThread(tornado.ioloop.IOLoop.current()).start()
    await asyncio.Event().wait()  # serve until Ctrl-C


if __name__ == "__main__":
    parse_command_line()
    with contextlib.suppress(KeyboardInterrupt):  # the daemon thread ends with the process
        asyncio.run(main())
