from services.web.app import WebSettings, create_app
from shared.service import main

main(WebSettings, create_app)
