"""`rq worker -c tests.bridges.rq_settings -w switchboard_client.rq.SwitchboardWorker`"""

from __future__ import annotations

from switchboard_client.rq import install

from . import common

REDIS_URL = common.REDIS_URL
QUEUES = ["default"]

install(url=common.SWITCHBOARD_URL, token=common.TOKEN, capture_logs=common.CAPTURE_LOGS)
