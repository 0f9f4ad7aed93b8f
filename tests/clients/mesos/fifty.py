"""The framework that mesoshttp_50.py and avmesos_50.py both run, written
against the API the two PyPI libraries share (avmesos is a fork of
mesoshttp): launch TASKS command tasks, one logical task each, until every
one has reached TASK_FINISHED, across master failovers.

Environment:
  MESOS_MASTER        comma-separated master URLs (http://host:port), all of
                      them: the library tries them in order on every
                      (re)subscription, and a follower redirects (307)
  MESOS_PRINCIPAL     principal (FrameworkInfo.principal, HTTP Basic user)
  MESOS_SECRET        its secret (HTTP Basic password)
  MESOS_USER          the Unix user tasks run as (default: this process's)
  TASKS (50), TIMEOUT (120 s), MESOS_READ_TIMEOUT (45 s; more than the
  master's heartbeat interval), TASK_COMMAND ("echo hi"), LOG_LEVEL (INFO;
  DEBUG shows every call and the master's answer)

Prints "finished N/TASKS" last; exit status 0 when all finished, 2 on
timeout, 3 when the library gave up (register() returned).

What the library does by itself: it re-SUBSCRIBEs with the framework id
once the event stream breaks, trying MESOS_MASTER from the start
(following a follower's 307), and it ACKNOWLEDGEs each update before the
UPDATE callback runs. What this program adds: credentials that survive
the redirect, a failover timeout, a fresh driver per subscription,
reconciliation of its open tasks, and a relaunch of the ones that failed.
"""
import getpass
import logging
import os
import sys
import tempfile
import threading
import time

import requests

CPUS, MEM = 0.1, 32.0
TERMINAL_BAD = {'TASK_FAILED', 'TASK_KILLED', 'TASK_LOST', 'TASK_ERROR', 'TASK_DROPPED',
                'TASK_GONE', 'TASK_GONE_BY_OPERATOR', 'TASK_UNKNOWN'}
TERMINAL = TERMINAL_BAD | {'TASK_FINISHED'}
RECONCILE_EVERY = 5.0  # seconds, for tasks still open

N = int(os.environ.get('TASKS', '50'))
TIMEOUT = float(os.environ.get('TIMEOUT', '120'))
COMMAND = os.environ.get('TASK_COMMAND', 'echo hi')

logging.basicConfig(stream=sys.stdout, level=os.environ.get('LOG_LEVEL', 'INFO'),
                    format='%(asctime)s %(name)s %(levelname)s %(message)s')
log = logging.getLogger('fifty')


def settings():
    """The masters and credentials from the environment."""
    masters = [u.strip().rstrip('/') for u in os.environ.get('MESOS_MASTER', '').split(',') if u.strip()]
    if not masters:
        sys.exit('MESOS_MASTER is empty')
    principal = os.environ.get('MESOS_PRINCIPAL')
    secret = os.environ.get('MESOS_SECRET')
    if principal and secret:
        # requests drops the Authorization header when a 307 leads to another
        # host:port, but applies .netrc credentials to every request it
        # sends, redirects included: a 'default' entry keeps Basic auth on
        # the way from a follower to the leader.
        fd, path = tempfile.mkstemp(prefix='mesos-netrc-')
        with os.fdopen(fd, 'w') as f:
            f.write('default login %s password %s\n' % (principal, secret))
        os.environ['NETRC'] = path
    user = os.environ.get('MESOS_USER') or getpass.getuser()
    return masters, principal, secret, user


def configure(client, principal, secret):
    """What both libraries take the same way."""
    client.set_failover_timeout(300)  # keep the framework and its tasks while it reconnects
    if principal:
        client.set_credentials(principal, secret)  # FrameworkInfo.principal
    if principal and secret:
        client.requests_auth = requests.auth.HTTPBasicAuth(principal, secret)


def scalar(offer, name):
    return sum(r.get('scalar', {}).get('value', 0.0) for r in offer.get('resources', [])
               if r.get('name') == name and r.get('type', 'SCALAR') == 'SCALAR')


class Framework:
    """The callbacks and the bookkeeping: `pending` logical ids wait for an
    offer; `current` maps each launched logical id to its latest task id,
    `open_tasks` each task not yet ended to its agent; `finished` each
    logical id to the task ids that reached TASK_FINISHED (an update may
    come more than once: resent by the agent, and as a reconciliation
    answer)."""

    def __init__(self, client, suppress=False):
        self.client = client
        self.suppress = suppress  # avmesos has SUPPRESS, mesoshttp not
        self.suppressed = False
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.driver = None
        self.pending = ['task-%02d' % i for i in range(N)]
        self.attempts = {}
        self.current = {}
        self.logical = {}
        self.open_tasks = {}
        self.finished = {}
        client.on(client.SUBSCRIBED, self.subscribed)
        client.on(client.OFFERS, self.offers)
        client.on(client.UPDATE, self.update)
        client.on(client.ERROR, lambda msg: log.error('ERROR event: %s', msg))
        client.on(client.DISCONNECTED, lambda msg: log.warning('DISCONNECTED: %s', msg))
        client.on(client.RECONNECTED, lambda msg: log.warning('RECONNECTED: %s', msg))

    def subscribed(self, driver):
        # After the first SUBSCRIBE and after every re-SUBSCRIBE: the driver
        # carries the new stream's Mesos-Stream-Id.
        with self.lock:
            self.driver = driver
            self.suppressed = False
            pending = bool(self.pending)
        log.info('SUBSCRIBED framework_id=%s stream=%s', self.client.frameworkId, driver.streamId)
        self.reconcile()
        if pending:
            driver.revive()

    def reconcile(self):
        with self.lock:
            driver = self.driver
            tasks = [{'task_id': {'value': t}, 'agent_id': {'value': a}} for t, a in self.open_tasks.items()]
        if driver and tasks:
            log.info('RECONCILE %d open tasks', len(tasks))
            driver.reconcile(tasks)

    def offers(self, offers):
        for offer in offers:
            o = offer.get_offer()
            agent = o['agent_id']['value']
            cpus, mem = scalar(o, 'cpus'), scalar(o, 'mem')
            tasks = []
            with self.lock:
                while self.pending and cpus >= CPUS - 1e-9 and mem >= MEM - 1e-9:
                    lid = self.pending.pop(0)
                    self.attempts[lid] = self.attempts.get(lid, 0) + 1
                    tid = lid if self.attempts[lid] == 1 else '%s.%d' % (lid, self.attempts[lid])
                    self.current[lid] = tid
                    self.logical[tid] = lid
                    self.open_tasks[tid] = agent
                    cpus -= CPUS
                    mem -= MEM
                    tasks.append({
                        'name': tid,
                        'task_id': {'value': tid},
                        # As Mesos' docs write a TaskInfo; Offer.accept()
                        # adds the pre-v1 'slave_id' beside it.
                        'agent_id': {'value': agent},
                        'resources': [
                            {'name': 'cpus', 'type': 'SCALAR', 'scalar': {'value': CPUS}},
                            {'name': 'mem', 'type': 'SCALAR', 'scalar': {'value': MEM}},
                        ],
                        'command': {'value': COMMAND, 'shell': True},
                    })
            if tasks:
                log.info('ACCEPT offer %s: %s', o['id']['value'], ' '.join(t['name'] for t in tasks))
                offer.accept(tasks, options={'filters': {'refuse_seconds': 1}})
            else:
                offer.decline(options={'filters': {'refuse_seconds': 5}})
        with self.lock:
            idle = self.suppress and not self.pending and not self.suppressed and self.driver
            if idle:
                self.suppressed = True
        if idle:
            self.driver.suppress()

    def update(self, update):
        # The library has ACKNOWLEDGEd it already (when it carries a uuid).
        st = update['status']
        tid, state = st['task_id']['value'], st['state']
        relaunch = False
        with self.lock:
            lid = self.logical.get(tid, tid.split('.')[0])
            if state in TERMINAL:
                self.open_tasks.pop(tid, None)
            if state == 'TASK_FINISHED':
                ids = self.finished.setdefault(lid, set())
                ids.add(tid)
                if len(ids) > 1:
                    log.error('%s finished twice: %s', lid, sorted(ids))
            elif (state in TERMINAL_BAD and self.current.get(lid) == tid
                  and lid not in self.finished and lid not in self.pending):
                log.warning('%s ended %s (%s %s): relaunching', tid, state,
                            st.get('reason', ''), st.get('message', ''))
                self.pending.append(lid)
                self.suppressed = False
                relaunch = True
            n = len(self.finished)
            driver = self.driver
        log.info('UPDATE %s %s finished=%d/%d', tid, state, n, N)
        if relaunch and driver:
            driver.revive()
        if n >= N:
            self.done.set()

    def run(self):
        """Runs the library's loop in a thread until every task finished or
        TIMEOUT; returns the exit status."""
        def loop():
            self.client.register()  # returns only when it gives up
            log.error('register() returned')
        th = threading.Thread(target=loop, daemon=True)
        th.start()
        deadline = time.time() + TIMEOUT
        next_reconcile = time.time() + RECONCILE_EVERY
        while not self.done.is_set() and th.is_alive() and time.time() < deadline:
            self.done.wait(0.5)
            if time.time() >= next_reconcile:
                next_reconcile = time.time() + RECONCILE_EVERY
                try:
                    self.reconcile()
                except Exception as e:  # the library raises on a failed POST
                    log.warning('reconcile: %s', e)
        rc = 0 if self.done.is_set() else (3 if not th.is_alive() else 2)
        with self.lock:
            twice = sorted(lid for lid, ids in self.finished.items() if len(ids) > 1)
            n = len(self.finished)
            driver = self.driver
        if twice:
            log.error('finished more than once: %s', twice)
        self.client.stop = True
        if driver:
            try:
                driver.tearDown()  # the framework, its offers and tasks go away
            except Exception as e:
                log.warning('teardown: %s', e)
        # One write a line: the library's thread may still be logging.
        sys.stdout.write('framework_id %s\n' % self.client.frameworkId)
        sys.stdout.write('finished %d/%d\n' % (n, N))
        sys.stdout.flush()
        return rc
