"""An address the web app has no page for answers with a page in the person's language, not the API's JSON."""

import httpx

from services.web.app import WebSettings, create_app
from services.web.security import LANG_COOKIE


async def _get(path: str, cookies: dict[str, str] | None = None) -> httpx.Response:
    app = create_app(WebSettings(env="dev"))  # no request here reaches the database or another service
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://web",
                                 cookies=cookies) as client:
        return await client.get(path)


async def test_an_unknown_address_is_a_page_in_indonesian_or_in_the_chosen_english():
    page = await _get("/laporan-lama")
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert "Halaman tidak ditemukan" in page.text and 'href="/"' in page.text
    english = await _get("/laporan-lama", {LANG_COOKIE: "en"})
    assert english.status_code == 404 and "Page not found" in english.text


async def test_the_api_and_the_static_files_keep_their_plain_answers():
    for path in ("/api/nothing", "/static/nothing.css"):
        answer = await _get(path)
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found", path
