"""A framework on `pymesos` (PyPI, Douban's pure-Python Mesos scheduler
driver, unmodified) with the logic of `mesos-bench`'s other ways: pack each
offer with as many trivial tasks (`true`, 0.01 cpus, 4 MB) as fit, let the
driver acknowledge every update (one ACKNOWLEDGE call each, its implicit
acknowledgements), decline an offer it cannot use for a second, tear down
once every task has finished.

pymesos keeps one HTTP connection for its calls (and one for the event
stream), as Mesos' own drivers do; mesoshttp and avmesos open one per call.

Environment:
  MESOS_MASTER     host:port of the master's Mesos listener
  MESOS_PRINCIPAL  principal (FrameworkInfo.principal, HTTP Basic user)
  MESOS_SECRET     its secret (HTTP Basic password)
  MESOS_USER       the Unix user tasks run as (default: this process's)
  TASKS (50), TIMEOUT (120 s)

Prints "finished N/TASKS" last; exit status 0 when all finished, 1 when a
task ended otherwise, 2 on timeout.
"""
import getpass
import logging
import os
import sys
import threading

from pymesos import MesosSchedulerDriver, Scheduler

CPUS, MEM = 0.01, 4.0
N = int(os.environ.get('TASKS', '50'))
TIMEOUT = float(os.environ.get('TIMEOUT', '120'))

logging.basicConfig(stream=sys.stdout, level=os.environ.get('LOG_LEVEL', 'WARNING'),
                    format='%(asctime)s %(name)s %(levelname)s %(message)s')


def scalar(offer, name):
    return sum(r.get('scalar', {}).get('value', 0.0)
               for r in offer.get('resources', []) if r.get('name') == name)


class Tasks(Scheduler):
    def __init__(self, user):
        self.user = user
        self.next = 0
        self.finished = set()
        self.failed = None
        self.done = threading.Event()

    def resourceOffers(self, driver, offers):
        for offer in offers:
            fit = int(min((scalar(offer, 'cpus') + 1e-9) / CPUS, (scalar(offer, 'mem') + 1e-9) / MEM))
            k = max(0, min(fit, N - self.next))
            tasks = []
            for i in range(self.next, self.next + k):
                tasks.append({
                    'name': 't', 'task_id': {'value': 'p%d' % i}, 'agent_id': offer['agent_id'],
                    'resources': [
                        {'name': 'cpus', 'type': 'SCALAR', 'scalar': {'value': CPUS}},
                        {'name': 'mem', 'type': 'SCALAR', 'scalar': {'value': MEM}},
                    ],
                    'command': {'value': 'true', 'user': self.user},
                })
            self.next += k
            # launchTasks declines when there are no tasks.
            driver.launchTasks([offer['id']], tasks, filters={'refuse_seconds': 1})

    def statusUpdate(self, driver, status):
        state = status['state']
        if state == 'TASK_FINISHED':
            self.finished.add(status['task_id']['value'])
            if len(self.finished) >= N:
                self.done.set()
        elif state not in ('TASK_STAGING', 'TASK_STARTING', 'TASK_RUNNING'):
            self.failed = '%s ended %s: %s' % (status['task_id']['value'], state, status.get('message'))
            self.done.set()

    def error(self, driver, message):
        self.failed = 'ERROR event: %s' % message
        self.done.set()


def main():
    user = os.environ.get('MESOS_USER') or getpass.getuser()
    sched = Tasks(user)
    framework = {'user': user, 'name': 'pymesos-tasks', 'hostname': 'localhost'}
    if os.environ.get('MESOS_PRINCIPAL'):
        framework['principal'] = os.environ['MESOS_PRINCIPAL']
    driver = MesosSchedulerDriver(sched, framework, os.environ['MESOS_MASTER'],
                                  principal=os.environ.get('MESOS_PRINCIPAL'),
                                  secret=os.environ.get('MESOS_SECRET'))
    driver.start()
    finished = sched.done.wait(TIMEOUT)
    driver.stop()  # not a failover: the driver tears the framework down
    driver.join()
    print('finished %d/%d' % (len(sched.finished), N))
    if sched.failed:
        print(sched.failed)
        sys.exit(1)
    sys.exit(0 if finished else 2)


if __name__ == '__main__':
    main()
