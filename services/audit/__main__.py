from services.audit.app import AuditSettings, create_app
from shared.service import main

main(AuditSettings, create_app)
