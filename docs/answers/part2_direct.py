"""Part 2, exercise 2: app.py's SendThread with the hand-over taken out, to see which tests notice.

DirectSendThread calls send_to_all() from its own thread, as the article did. Only
tests/test_server.py's test_writes_on_loop_thread notices: it records the thread of every
byte sent. test_thread_never_touches_clients watches ``clients``, and the tick's loop walks
``targets`` instead. tests/test_answers.py runs both against it.
"""

from __future__ import annotations

import datetime
import math

import app


class DirectSendThread(app.SendThread):
    def run(self) -> None:
        tick = math.floor(self.clock() / self.interval) + 1
        while not self.stopping.is_set():
            delay = tick * self.interval - self.clock()
            if delay > 0:
                self.stopping.wait(delay)
                continue
            # The bug put back: the thread writes to the sockets itself.
            app.send_to_all(str(datetime.datetime.now()))
            tick += 1
