"""Part 1, exercise 2: docs/minimal.py with a coroutine in place of the SendThread.

The coroutine runs on the IOLoop's thread, so it calls send_to_all itself: there is nothing
to hand over. Run it with --port=8888, or under ``python docs/churn.py``.
"""

import asyncio
import contextlib
import datetime
import logging
import math
import time

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


async def tick_forever(interval):
    """Send the time at every multiple of ``interval`` on the wall clock, on the loop's thread."""
    sending = set()  # ticks still going out, kept so that none is garbage-collected
    tick = math.floor(time.time() / interval)
    while True:
        tick += 1
        while (delay := tick * interval - time.time()) > 0:
            await asyncio.sleep(delay)  # time.sleep() here would stop the whole loop
        # Not awaited: a client that does not read must not hold the next tick back.
        task = asyncio.create_task(send_to_all(str(datetime.datetime.now())))
        sending.add(task)
        task.add_done_callback(sending.discard)


async def main():
    app = tornado.web.Application([(r"/websocket", MyWebSocketHandler)])
    app.listen(options.port, "127.0.0.1")
    logging.info("Listening on http://127.0.0.1:%d/", options.port)
    # Keep the task: the loop holds only a weak reference to it.
    ticker = asyncio.create_task(tick_forever(options.interval))
    await asyncio.Event().wait()  # serve until Ctrl-C
    ticker.cancel()


if __name__ == "__main__":
    parse_command_line()
    with contextlib.suppress(KeyboardInterrupt):  # asyncio.run() cancels the ticker
        asyncio.run(main())
