#!/usr/bin/env python3
"""The echo executor against a fake agent (Python's standard library only):
`python3 tests/executors/test_echo_executor.py`.

The fake agent serves `POST /api/v1/executor` as Mesos' agent does: a
chunked RecordIO stream of JSON events for SUBSCRIBE, 202 for the other
calls. It checks the executor's calls, then goes away (its port refuses
connections, as an agent restarting) and comes back on the same port: the
executor subscribes again with what was not acknowledged."""

import base64
import http.server
import json
import os
import queue
import subprocess
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
TOKEN = "secret-token"
T = 20


def b64(raw):
    return base64.b64encode(raw).decode("ascii")


class FakeAgent:
    def __init__(self, port=0):
        self.calls = queue.Queue()
        self.subscribes = queue.Queue()
        self.events = None
        agent = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path != "/api/v1/executor":
                    return self.answer(404)
                if self.headers.get("Authorization") != "Bearer " + TOKEN:
                    return self.answer(401)
                if self.headers.get("Content-Type") != "application/json":
                    return self.answer(415)
                call = json.loads(body)
                if call["type"] != "SUBSCRIBE":
                    agent.calls.put(call)
                    return self.answer(202)
                events = queue.Queue()
                agent.events = events
                agent.subscribes.put(call)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                while True:
                    event = events.get()
                    if event is None:
                        break
                    data = json.dumps(event).encode()
                    record = str(len(data)).encode() + b"\n" + data
                    # Two chunks for one record: chunks and records are
                    # independent.
                    for part in (record[:3], record[3:]):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
                self.close_connection = True

            def answer(self, code):
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def send(self, event):
        self.events.put(event)

    def stop(self):
        if self.events is not None:
            self.events.put(None)
        self.server.shutdown()
        self.server.server_close()

    def call(self, kind=None):
        while True:
            c = self.calls.get(timeout=T)
            if kind is None or c["type"] == kind:
                return c

    def update(self, task, state):
        while True:
            c = self.call("UPDATE")
            s = c["update"]["status"]
            if s["task_id"]["value"] == task and s["state"] == state:
                return s


class EchoExecutorTest(unittest.TestCase):
    def test_a_life_with_an_agent_restart(self):
        agent = FakeAgent()
        env = dict(os.environ)
        env.update({
            "MESOS_AGENT_ENDPOINT": "127.0.0.1:%d" % agent.port,
            "MESOS_FRAMEWORK_ID": "fw-1",
            "MESOS_EXECUTOR_ID": "echo",
            "MESOS_EXECUTOR_AUTHENTICATION_TOKEN": TOKEN,
            "MESOS_SUBSCRIPTION_BACKOFF_MAX": "500ms",
            "MESOS_RECOVERY_TIMEOUT": "30secs",
            "MESOS_CHECKPOINT": "1",
        })
        proc = subprocess.Popen([sys.executable, os.path.join(HERE, "echo_executor.py")], env=env)
        try:
            sub = agent.subscribes.get(timeout=T)
            self.assertEqual(sub["framework_id"], {"value": "fw-1"})
            self.assertEqual(sub["executor_id"], {"value": "echo"})
            self.assertEqual(sub["subscribe"], {"unacknowledged_tasks": [], "unacknowledged_updates": []})
            agent.send({"type": "SUBSCRIBED", "subscribed": {
                "executor_info": {"executor_id": {"value": "echo"}},
                "framework_info": {"user": "nobody", "name": "fw"},
                "agent_info": {"hostname": "fake"}}})

            def task(tid, script):
                return {"name": tid, "task_id": {"value": tid}, "agent_id": {"value": "a1"},
                        "data": b64(script.encode())}

            agent.send({"type": "LAUNCH", "launch": {"task": task("t1", "true")}})
            running = agent.update("t1", "TASK_RUNNING")
            self.assertEqual(running["source"], "SOURCE_EXECUTOR")
            self.assertEqual(running["executor_id"], {"value": "echo"})
            self.assertEqual(len(base64.b64decode(running["uuid"])), 16)
            finished = agent.update("t1", "TASK_FINISHED")
            self.assertNotEqual(finished["uuid"], running["uuid"])
            agent.send({"type": "ACKNOWLEDGED", "acknowledged": {"task_id": {"value": "t1"}, "uuid": running["uuid"]}})

            agent.send({"type": "HEARTBEAT"})
            agent.send({"type": "MESSAGE", "message": {"data": b64(b"hi")}})
            reply = agent.call("MESSAGE")
            self.assertEqual(reply["message"], {"data": b64(b"echo:hi")})

            # The agent goes away with a task running, and comes back.
            agent.send({"type": "LAUNCH", "launch": {"task": task("t2", "sleep 1")}})
            agent.update("t2", "TASK_RUNNING")
            port = agent.port
            agent.stop()
            time.sleep(2)
            agent = FakeAgent(port)
            sub = agent.subscribes.get(timeout=T)
            updates = [(u["status"]["task_id"]["value"], u["status"]["state"])
                       for u in sub["subscribe"]["unacknowledged_updates"]]
            self.assertEqual(updates, [("t1", "TASK_FINISHED"), ("t2", "TASK_RUNNING"), ("t2", "TASK_FINISHED")])
            tasks = [t["task_id"]["value"] for t in sub["subscribe"]["unacknowledged_tasks"]]
            self.assertEqual(tasks, ["t2"])
            agent.send({"type": "SUBSCRIBED", "subscribed": {}})
            for u in sub["subscribe"]["unacknowledged_updates"]:
                s = u["status"]
                agent.send({"type": "ACKNOWLEDGED", "acknowledged": {"task_id": s["task_id"], "uuid": s["uuid"]}})

            agent.send({"type": "LAUNCH", "launch": {"task": task("t3", "sleep 30")}})
            agent.update("t3", "TASK_RUNNING")
            agent.send({"type": "KILL", "kill": {"task_id": {"value": "t3"}}})
            agent.update("t3", "TASK_KILLED")

            agent.send({"type": "LAUNCH", "launch": {"task": task("t4", "sleep 30")}})
            agent.update("t4", "TASK_RUNNING")
            agent.send({"type": "SHUTDOWN"})
            agent.update("t4", "TASK_KILLED")
            self.assertEqual(proc.wait(timeout=T), 0)
        finally:
            if proc.poll() is None:
                proc.kill()
            agent.stop()


if __name__ == "__main__":
    unittest.main()
