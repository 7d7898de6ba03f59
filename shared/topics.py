"""Topic names and header keys, defined once (DESIGN.md, "Topics and events")."""

INTAKE = "waspada.intake.v1"
VERIFICATION = "waspada.verification.v1"
REFERRAL = "waspada.referral.v1"
ACCESS = "waspada.access.v1"
IDENTITY = "waspada.identity.v1"  # key: the account id (the envelope's case_id carries it)
DEADLETTER = "waspada.deadletter.v1"

ALL = (INTAKE, VERIFICATION, REFERRAL, ACCESS, IDENTITY, DEADLETTER)
CASE_TOPICS = (INTAKE, VERIFICATION, REFERRAL, ACCESS)
DEFAULT_PARTITIONS = 6

HEADER_EVENT_TYPE = "event-type"
HEADER_EVENT_ID = "event-id"
HEADER_CASE_ID = "case-id"
HEADER_CORRELATION_ID = "correlation-id"
HEADER_URGENT = "urgent"  # "1" on a report urgent on its face (shared/urgency.py): consumers take it first

# Dead-letter headers: where the message came from and why it was given up on.
DLQ_SOURCE_TOPIC = "dlq-source-topic"
DLQ_SOURCE_PARTITION = "dlq-source-partition"
DLQ_SOURCE_OFFSET = "dlq-source-offset"
DLQ_CONSUMER = "dlq-consumer"
DLQ_ERROR = "dlq-error"
DLQ_ATTEMPTS = "dlq-attempts"
