#!/usr/bin/env python3
"""echo_executor: a custom Mesos executor written against Mesos' v1
executor HTTP API (Mesos 1.11, docs/executor-http-api.md), as a Mesos user
writes one, with nothing but Python's standard library.

The agent starts it with, in its environment:

  MESOS_AGENT_ENDPOINT                 ip:port of the agent's executor API
  MESOS_FRAMEWORK_ID, MESOS_EXECUTOR_ID
  MESOS_EXECUTOR_AUTHENTICATION_TOKEN  sent as `Authorization: Bearer ...`
  MESOS_SUBSCRIPTION_BACKOFF_MAX       e.g. "2secs": most time between
                                       two SUBSCRIBE attempts
  MESOS_RECOVERY_TIMEOUT               e.g. "15mins": how long to try to
                                       subscribe again once disconnected
  MESOS_CHECKPOINT                     "0": exit when disconnected (as
                                       libmesos does); else recover

It SUBSCRIBEs (`POST /api/v1/executor`, JSON) and reads the RecordIO event
stream (`<length>\\n<json>`). Every other call goes on a short connection of
its own. What it does with the events:

  LAUNCH        TASK_RUNNING, runs the task's `data` (base64 of a shell
                command; none: nothing), then TASK_FINISHED (exit 0),
                TASK_FAILED (else) or TASK_KILLED (killed)
  LAUNCH_GROUP  tells the framework which tasks the one event held (a
                MESSAGE of `group:` + their ids, comma-separated, in
                order), then runs each task as LAUNCH does
  KILL          kills the task's command: TASK_KILLED
  MESSAGE       answers with a MESSAGE of `echo:` + the bytes received
  ACKNOWLEDGED  forgets the update (and the task, once acknowledged)
  SHUTDOWN      kills every task (TASK_KILLED) and exits 0
  ERROR         exits 1

Updates not acknowledged yet and tasks launched but without an acknowledged
update are kept, and given back with the next SUBSCRIBE
(`unacknowledged_updates`, `unacknowledged_tasks`) when the stream ends or
the agent cannot be reached (it restarted): it tries again with a backoff
until the recovery timeout. Logs go to stderr. Arguments are ignored (a
test may add one to find the process).
"""

import base64
import http.client
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

LOCK = threading.RLock()


def log(*args):
    print("echo_executor[%d]:" % os.getpid(), *args, file=sys.stderr, flush=True)


def duration(text, default):
    """Seconds in a stout Duration ("2secs", "15mins", "500ms") or a Go-like
    one ("2s", "1m30s")."""
    if not text:
        return default
    units = {
        "ns": 1e-9, "us": 1e-6, "ms": 1e-3,
        "s": 1.0, "sec": 1.0, "secs": 1.0,
        "m": 60.0, "min": 60.0, "mins": 60.0,
        "h": 3600.0, "hr": 3600.0, "hrs": 3600.0,
        "d": 86400.0, "day": 86400.0, "days": 86400.0,
        "w": 604800.0, "week": 604800.0, "weeks": 604800.0,
    }
    parts = re.findall(r"([0-9]*\.?[0-9]+)\s*([a-z]+)", text.strip().lower())
    if not parts or any(u not in units for _, u in parts):
        log("cannot read the duration %r; using %ss" % (text, default))
        return default
    return sum(float(n) * units[u] for n, u in parts)


def b64(raw):
    return base64.b64encode(raw).decode("ascii")


def unb64(text):
    try:
        return base64.b64decode(text or "")
    except (ValueError, TypeError):
        return b""


class Executor:
    def __init__(self):
        env = os.environ
        endpoint = env["MESOS_AGENT_ENDPOINT"]
        if endpoint.startswith("http://"):
            endpoint = endpoint[len("http://"):]
        host, _, port = endpoint.rpartition(":")
        self.host = host.strip("[]")
        self.port = int(port)
        self.framework_id = env["MESOS_FRAMEWORK_ID"]
        self.executor_id = env["MESOS_EXECUTOR_ID"]
        self.token = env.get("MESOS_EXECUTOR_AUTHENTICATION_TOKEN")
        self.backoff_max = duration(env.get("MESOS_SUBSCRIPTION_BACKOFF_MAX"), 2.0)
        self.recovery_timeout = duration(env.get("MESOS_RECOVERY_TIMEOUT"), 15 * 60.0)
        self.exit_on_disconnect = env.get("MESOS_CHECKPOINT") == "0"
        self.connected = False
        # task id -> TaskInfo: launched, no update of it acknowledged yet.
        self.unacked_tasks = {}
        # uuid (base64) -> Update ({"status": TaskStatus}), in order.
        self.unacked_updates = {}
        # Updates made while disconnected and not in a SUBSCRIBE yet.
        self.unsent = []
        # task id -> the Popen running it; and the tasks being killed.
        self.procs = {}
        self.killed = set()
        self.finished = set()
        self.launched = set()
        # Tasks whose terminal update has been sent (or kept for later).
        self.ended = set()

    # ---- calls ----

    def headers(self, accept=True):
        h = {"Content-Type": "application/json"}
        if accept:
            h["Accept"] = "application/json"
        if self.token:
            h["Authorization"] = "Bearer " + self.token
        return h

    def call(self, kind, **body):
        c = {
            "type": kind,
            "framework_id": {"value": self.framework_id},
            "executor_id": {"value": self.executor_id},
        }
        c.update(body)
        return c

    def post(self, call):
        """A call on a short connection of its own: its HTTP status, or None
        when the agent could not be reached."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request("POST", "/api/v1/executor", json.dumps(call), self.headers())
            resp = conn.getresponse()
            text = resp.read().decode("utf-8", "replace")
            if resp.status != 202:
                log("%s answered %d %s" % (call["type"], resp.status, text.strip()))
            return resp.status
        except (OSError, http.client.HTTPException) as e:
            log("%s failed: %s" % (call["type"], e))
            return None
        finally:
            conn.close()

    def update(self, task_id, state, message=None):
        status = {
            "task_id": {"value": task_id},
            "state": state,
            "source": "SOURCE_EXECUTOR",
            "executor_id": {"value": self.executor_id},
            "uuid": b64(uuid.uuid4().bytes),
            "timestamp": time.time(),
        }
        if message:
            status["message"] = message
        update = {"status": status}
        with LOCK:
            self.unacked_updates[status["uuid"]] = update
            connected = self.connected
            if not connected:
                self.unsent.append(update)
        log("%s %s" % (task_id, state))
        # Disconnected, it goes with the next SUBSCRIBE instead.
        if connected:
            self.post(self.call("UPDATE", update=update))

    # ---- tasks ----

    def run_task(self, task):
        task_id = task["task_id"]["value"]
        command = unb64(task.get("data")).decode("utf-8", "replace").strip()
        self.update(task_id, "TASK_RUNNING")
        code = 0
        if command:
            try:
                proc = subprocess.Popen(["/bin/sh", "-c", command], start_new_session=True)
            except OSError as e:
                self.end(task_id, "TASK_FAILED", "cannot run %r: %s" % (command, e))
                return
            with LOCK:
                self.procs[task_id] = proc
                kill_now = task_id in self.killed
            if kill_now:
                self.kill_proc(proc)
            code = proc.wait()
            with LOCK:
                self.procs.pop(task_id, None)
        with LOCK:
            killed = task_id in self.killed
        if killed:
            self.end(task_id, "TASK_KILLED", "killed")
        elif code == 0:
            self.end(task_id, "TASK_FINISHED", "exited 0")
        else:
            self.end(task_id, "TASK_FAILED", "exited with %d" % code)

    def end(self, task_id, state, message):
        with LOCK:
            if task_id in self.finished:
                return
            self.finished.add(task_id)
        self.update(task_id, state, message)
        with LOCK:
            self.ended.add(task_id)

    @staticmethod
    def kill_proc(proc):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass

    def launch(self, task):
        """Runs a task it was handed (once: a LAUNCH again is ignored)."""
        task_id = task["task_id"]["value"]
        with LOCK:
            if task_id in self.launched:
                log("LAUNCH of %s again: it runs already" % task_id)
                return
            self.launched.add(task_id)
            self.unacked_tasks[task_id] = task
        threading.Thread(target=self.run_task, args=(task,), daemon=True).start()

    def kill(self, task_id):
        with LOCK:
            self.killed.add(task_id)
            proc = self.procs.get(task_id)
            known = task_id in self.unacked_tasks or proc is not None
        if proc is not None:
            self.kill_proc(proc)
        elif not known:
            log("KILL of %s, a task it does not run" % task_id)

    def kill_all(self):
        with LOCK:
            running = list(self.procs.items())
            # Also those about to start their command.
            self.killed.update(self.launched)
        for _, proc in running:
            self.kill_proc(proc)

    # ---- events ----

    def on_event(self, event):
        kind = event.get("type")
        if kind == "SUBSCRIBED":
            info = event.get("subscribed", {})
            log("subscribed on agent %s" % info.get("agent_info", {}).get("hostname", "?"))
        elif kind == "LAUNCH":
            self.launch(event["launch"]["task"])
        elif kind == "LAUNCH_GROUP":
            tasks = event["launch_group"]["task_group"].get("tasks", [])
            ids = [t["task_id"]["value"] for t in tasks]
            log("LAUNCH_GROUP of %s" % ", ".join(ids))
            told = self.call("MESSAGE", message={"data": b64(("group:" + ",".join(ids)).encode())})
            threading.Thread(target=self.post, args=(told,), daemon=True).start()
            for task in tasks:
                self.launch(task)
        elif kind == "KILL":
            self.kill(event["kill"]["task_id"]["value"])
        elif kind == "ACKNOWLEDGED":
            ack = event["acknowledged"]
            with LOCK:
                self.unacked_updates.pop(ack["uuid"], None)
                self.unacked_tasks.pop(ack["task_id"]["value"], None)
        elif kind == "MESSAGE":
            data = unb64(event["message"].get("data"))
            log("message %r" % data)
            reply = self.call("MESSAGE", message={"data": b64(b"echo:" + data)})
            threading.Thread(target=self.post, args=(reply,), daemon=True).start()
        elif kind == "SHUTDOWN":
            self.shutdown(0)
        elif kind == "ERROR":
            log("error: %s" % event.get("error", {}).get("message"))
            self.shutdown(1)
        elif kind == "HEARTBEAT":
            pass
        else:
            log("ignoring %s" % kind)

    def shutdown(self, code):
        log("shutting down")
        self.kill_all()
        # Let the task threads send their TASK_KILLED.
        deadline = time.time() + 3
        while time.time() < deadline:
            with LOCK:
                if self.launched <= self.ended:
                    break
            time.sleep(0.05)
        log("exit %d" % code)
        os._exit(code)

    # ---- the subscription ----

    def subscribe_call(self):
        with LOCK:
            body = {
                "unacknowledged_tasks": list(self.unacked_tasks.values()),
                "unacknowledged_updates": list(self.unacked_updates.values()),
            }
            self.unsent = []
        return self.call("SUBSCRIBE", subscribe=body)

    def subscribe_once(self):
        """One subscription: reads its events until the stream ends. False
        when it could not be opened."""
        call = self.subscribe_call()
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request("POST", "/api/v1/executor", json.dumps(call), self.headers())
            resp = conn.getresponse()
            if resp.status != 200:
                log("SUBSCRIBE answered %d %s" % (resp.status, resp.read().decode("utf-8", "replace").strip()))
                return False
            log("SUBSCRIBE: %d tasks and %d updates unacknowledged"
                % (len(call["subscribe"]["unacknowledged_tasks"]), len(call["subscribe"]["unacknowledged_updates"])))
            # The agent heartbeats rarely: no time limit on the stream.
            conn.sock.settimeout(None)
            with LOCK:
                self.connected = True
                # Made after the SUBSCRIBE was written: not in it.
                late, self.unsent = self.unsent, []
            for update in late:
                self.post(self.call("UPDATE", update=update))
            for event in records(resp):
                self.on_event(event)
            log("the event stream ended")
            return True
        except (OSError, http.client.HTTPException, ValueError) as e:
            log("subscription: %s" % e)
            return self.connected
        finally:
            with LOCK:
                self.connected = False
            conn.close()

    def run(self):
        log("executor %s of framework %s, agent at %s:%d" % (self.executor_id, self.framework_id, self.host, self.port))
        signal.signal(signal.SIGTERM, lambda *_: self.shutdown(0))
        disconnected_at = time.time()
        attempt = 0
        while True:
            if self.subscribe_once():
                if self.exit_on_disconnect:
                    log("disconnected from the agent, and the framework does not checkpoint")
                    self.shutdown(1)
                disconnected_at = time.time()
                attempt = 0
            elif time.time() - disconnected_at > self.recovery_timeout:
                log("no agent within the recovery timeout of %.0fs" % self.recovery_timeout)
                self.shutdown(1)
            attempt += 1
            # Exponential backoff, jittered, at most the maximum.
            time.sleep(random.uniform(0, min(self.backoff_max, 0.1 * 2 ** min(attempt, 10))))


def records(resp):
    """The JSON records of a RecordIO stream: `<length>\\n<length bytes>`."""
    buf = b""
    while True:
        while b"\n" not in buf:
            chunk = resp.read1(65536)
            if not chunk:
                if buf.strip():
                    raise ValueError("the stream ended inside a record length")
                return
            buf += chunk
        head, _, buf = buf.partition(b"\n")
        size = int(head.strip())
        while len(buf) < size:
            chunk = resp.read1(65536)
            if not chunk:
                raise ValueError("the stream ended inside a record")
            buf += chunk
        yield json.loads(buf[:size].decode("utf-8"))
        buf = buf[size:]


if __name__ == "__main__":
    Executor().run()
