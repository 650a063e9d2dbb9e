"""Names: the OpenTelemetry messaging conventions (v1.44) and queue_core's own signals.

Signals with a convention use it (``messaging.*``, ``error.type``, ``server.*``). Signals
the conventions do not define live under ``queue_core.*``, as ``messaging.system`` is
``queue_core``. Metric attributes stay low-cardinality: queue and job name, never a job id.
"""

from __future__ import annotations

from typing import Final

from opentelemetry.semconv._incubating.attributes import messaging_attributes as messaging
from opentelemetry.semconv.attributes import error_attributes, server_attributes
from opentelemetry.semconv.schemas import Schemas

SCHEMA_URL: Final = Schemas.V1_44_0.value
SYSTEM: Final = "queue_core"

# Attributes from the conventions.
MESSAGING_SYSTEM: Final = messaging.MESSAGING_SYSTEM
OPERATION_NAME: Final = messaging.MESSAGING_OPERATION_NAME
OPERATION_TYPE: Final = messaging.MESSAGING_OPERATION_TYPE
DESTINATION: Final = messaging.MESSAGING_DESTINATION_NAME
MESSAGE_ID: Final = messaging.MESSAGING_MESSAGE_ID
CLIENT_ID: Final = messaging.MESSAGING_CLIENT_ID
BATCH_COUNT: Final = messaging.MESSAGING_BATCH_MESSAGE_COUNT
ERROR_TYPE: Final = error_attributes.ERROR_TYPE
SERVER_ADDRESS: Final = server_attributes.SERVER_ADDRESS
SERVER_PORT: Final = server_attributes.SERVER_PORT

# queue_core's own attributes.
JOB_NAME: Final = "queue_core.job.name"
JOB_ATTEMPT: Final = "queue_core.job.attempt"
JOB_MAX_ATTEMPTS: Final = "queue_core.job.max_attempts"
JOB_OUTCOME: Final = "queue_core.job.outcome"
JOB_STATE: Final = "queue_core.job.state"
JOB_DUPLICATE: Final = "queue_core.job.duplicate"
JOB_WAIT: Final = "queue_core.job.wait_time"
JOB_DELAY: Final = "queue_core.job.delay"
RATE_LIMIT_KIND: Final = "queue_core.rate_limit.kind"
STALL_OUTCOME: Final = "queue_core.stall.outcome"
WORKER_LOOP: Final = "queue_core.worker.loop"
OPERATION: Final = "queue_core.operation"  # an operator's action: pause, retry, cancel...
OPERATION_COUNT: Final = "queue_core.operation.jobs"  # jobs the action changed
OPERATION_ACTOR: Final = "queue_core.operation.actor"  # who acted (OperationEvent.actor)
SCHEDULER_ID: Final = "queue_core.scheduler.id"  # the job scheduler a run belongs to
# On a flow parent's link to a child: pending, completed, failed, ignored or removed.
DEPENDENCY_STATUS: Final = "queue_core.dependency.status"

# Metric names. The first four are the conventions'; the rest are queue_core's.
SENT_MESSAGES: Final = "messaging.client.sent.messages"
CONSUMED_MESSAGES: Final = "messaging.client.consumed.messages"
CLIENT_OPERATION_DURATION: Final = "messaging.client.operation.duration"
PROCESS_DURATION: Final = "messaging.process.duration"
WAIT_DURATION: Final = "queue_core.job.wait.duration"
JOB_DURATION: Final = "queue_core.job.duration"
RETRIES: Final = "queue_core.job.retries"
FAILURES: Final = "queue_core.job.failures"
STALLS: Final = "queue_core.job.stalls"
RATE_LIMIT_DELAY: Final = "queue_core.rate_limit.delay"
# Up-down counters are not pluralised (the naming guide): a count of entities is
# ``{entity}.count``, a number of entities in a state ``{entity}.{state}``.
ACTIVE_JOBS: Final = "queue_core.job.active"
WORKERS: Final = "queue_core.worker.count"
WORKER_CAPACITY: Final = "queue_core.worker.capacity"
QUEUE_DEPTH: Final = "queue_core.queue.depth"
OLDEST_JOB_AGE: Final = "queue_core.queue.oldest_job.age"
WORKER_ERRORS: Final = "queue_core.worker.errors"
OPERATOR_ACTIONS: Final = "queue_core.operator.actions"
OPERATOR_JOBS: Final = "queue_core.operator.jobs"
SCHEDULER_RUNS: Final = "queue_core.scheduler.runs"
SCHEDULER_LATENESS: Final = "queue_core.scheduler.lateness"

# Histogram buckets, seconds. The conventions advise 0.005 ... 10 s; jobs and queue waits
# run far longer, so the job buckets continue up to four hours. Enqueueing is a single
# Redis round trip, so the client-operation buckets start at half a millisecond.
CONVENTION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                             5.0, 7.5, 10.0)  # fmt: skip
JOB_BUCKETS: Final = (*CONVENTION_BUCKETS, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
                      7200.0, 14400.0)  # fmt: skip
CLIENT_BUCKETS: Final = (0.0005, 0.001, 0.0025, *CONVENTION_BUCKETS)
