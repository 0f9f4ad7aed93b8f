#!/usr/bin/env python3
"""50 command tasks through Mesos' v1 scheduler HTTP API with the PyPI
library mesoshttp (0.4.2, unmodified). The framework is in fifty.py, which
also describes the environment this takes."""
import os
import sys

from mesoshttp.client import MesosClient

import fifty

masters, principal, secret, user = fifty.settings()
MesosClient.WAIT_TIME = 2  # seconds between reconnection attempts (default 10)
client = MesosClient(mesos_urls=masters,  # a list: the library indexes it
                     frameworkName='mesoshttp-50',
                     frameworkUser=user,
                     max_reconnect=1000,  # counts every subscription, successful or not (default 3)
                     connection_timeout=float(os.environ.get('MESOS_READ_TIMEOUT', '45')))
fifty.configure(client, principal, secret)
rc = fifty.Framework(client).run()
sys.stdout.flush()
os._exit(rc)  # the library's thread may be blocked reading the stream
