"""The P3 chapter in the built smoke book, in Chromium: every figure drawn, Table 1 (purity@K of one neuron
per label) present with its values in [0, 1], the β ablation and P3-vs-recsae tables there, and no request
leaves the page's origin."""

from __future__ import annotations

from browser_support import BROWSER_MARKS, Visit, chapter_pages, explorer_divs, search_and_open_card

pytestmark = BROWSER_MARKS

# genre profiles, popularity, decades, monosemanticity, β curves, Matryoshka (smoke: on), 3 interventions
MIN_FIGURES = 9


def test_p3_page_has_figures_the_purity_table_and_no_outside_request(site, browser):
    base, pages = site
    found = chapter_pages(pages, "p3_monosemantic")
    assert found, "the smoke book has no P3 page"
    visit = Visit(browser, base)
    page = visit.open(found[0])
    imgs = page.locator("main img")
    assert imgs.count() >= MIN_FIGURES
    for i in range(imgs.count()):
        imgs.nth(i).scroll_into_view_if_needed()
        assert page.evaluate("(el) => el.complete && el.naturalWidth > 100", imgs.nth(i).element_handle())
    # Table 1: a header row per model (MF, NCF) over neuron and purity @10/@20/@50; one row per label
    tables = page.evaluate(
        """() => [...document.querySelectorAll('main table')].map(t => ({
            head: [...t.querySelectorAll('thead tr')].map(r => [...r.querySelectorAll('th')].map(c => c.innerText.trim())),
            rows: [...t.querySelectorAll('tbody tr')].map(r => [...r.querySelectorAll('th,td')].map(c => c.innerText.trim()))
        })).filter(t => t.head.flat().some(h => h === '@10'))"""
    )
    assert len(tables) == 1, "exactly one purity table (Table 1)"
    head, rows = tables[0]["head"], tables[0]["rows"]
    models = [h for h in head[0] if h]
    assert [m.split()[0] for m in models] == ["MF", "NCF"], head
    cols = head[-1] if len(head[-1]) == len(rows[0]) else head[1]
    for k in (10, 20, 50):
        assert cols.count(f"@{k}") == 2, (k, cols)
    assert len(rows) >= 10  # ML-100k: 18 genres with at least 10 items
    purity = [j for j, h in enumerate(cols) if h.startswith("@")]
    values = [float(r[j]) for r in rows for j in purity if len(r) == len(cols)]
    assert len(values) == 6 * len(rows) and all(0.0 <= v <= 1.0 for v in values) and max(values) > 0
    text = page.locator("main").inner_text()
    for heading in (
        "Table 1: purity of the genre neurons",
        "Fig. 4",
        "Fig. 5: interventions",
        "P3 vs recsae",
    ):
        assert heading in text, heading
    assert "Comedy" in text and "0.958" in text
    assert visit.outside == [] and visit.unexpected_errors() == []
    visit.page.close()


def test_p3_explorers_open_cards_for_each_sae(site, browser):
    base, pages = site
    found = chapter_pages(pages, "p3_monosemantic")
    visit = Visit(browser, base)
    page = visit.open(found[0])
    divs = explorer_divs(page, "p3-explorer-")
    assert len(divs) == 3, divs  # MF, NCF and (smoke: on) the Matryoshka SAE
    for div in divs:
        target = search_and_open_card(page, div)
        assert target["causal"]["edit"].startswith("×")  # item table: the neuron is scaled, not added
    # Table 1's neurons link to their cards
    assert page.locator("main a[href^='#p3-explorer-0-']").count() >= 1
    text = page.locator("main").inner_text()
    assert "De-biasing: the popularity neuron" in text and "item bias" in text
    assert visit.outside == [] and visit.unexpected_errors() == []
    visit.page.close()
