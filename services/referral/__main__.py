from services.referral.app import ReferralSettings, create_app
from shared.service import main

main(ReferralSettings, create_app)
