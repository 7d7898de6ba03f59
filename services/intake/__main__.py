from services.intake.app import IntakeSettings, create_app
from shared.service import main

main(IntakeSettings, create_app)
