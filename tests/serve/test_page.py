"""The web page in headless Chromium: pick an image, see the top-5 list (with a screenshot)."""

from __future__ import annotations

from pathlib import Path



def test_upload_shows_top5(chrome_driver, live_server: str, digit_pngs: list[Path], tmp_path: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    chrome_driver.get(live_server + "/")
    wait = WebDriverWait(chrome_driver, 30)
    wait.until(ec.text_to_be_present_in_element((By.ID, "meta"), "lenet5"))
    chrome_driver.find_element(By.ID, "file").send_keys(str(digit_pngs[0].resolve()))
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#top5 li")) == 5)
    items = [li.text for li in chrome_driver.find_elements(By.CSS_SELECTOR, "#top5 li")]
    assert len(items) == 5 and all(":" in t and t.endswith("%") for t in items), items
    pcts = [float(t.split(":")[1].strip().rstrip("%")) for t in items]
    assert pcts == sorted(pcts, reverse=True) and 0 < sum(pcts) <= 100.5
    assert chrome_driver.find_element(By.ID, "error").text == ""
    shot = tmp_path / "serve_page.png"
    assert chrome_driver.save_screenshot(str(shot)) and shot.stat().st_size > 1000
    print(f"screenshot: {shot}")


def test_bad_file_shows_error(chrome_driver, live_server: str, tmp_path: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    bad = tmp_path / "not_an_image.png"
    bad.write_text("hello")
    chrome_driver.get(live_server + "/")
    chrome_driver.find_element(By.ID, "file").send_keys(str(bad))
    WebDriverWait(chrome_driver, 30).until(lambda d: d.find_element(By.ID, "error").text)
    assert "not_an_image.png" in chrome_driver.find_element(By.ID, "error").text
    assert chrome_driver.find_elements(By.CSS_SELECTOR, "#top5 li") == []
