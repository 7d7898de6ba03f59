from services.verification.app import VerificationSettings, create_app
from shared.service import main

main(VerificationSettings, create_app)
