"""The hub's reasons said in the reader's language (agent/web/reasons.py).

The sentences come from the hub's own message builder run on the planner's scenarios, so a
change of wording at the hub that the page no longer recognises fails here rather than showing
households English on a German or Dutch page."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from agent.web.i18n import translations
from agent.web.reasons import say
from hub.prompts.messages import build_prompts
from hub.prompts.planner import Job, Outlook, plan
from tests.test_planner import scenarios


class _Comma:
    """Figures as German and Dutch write them (hand-made, not the page's own formats)."""

    def kw(self, value: float) -> str:
        return f"{value:.1f} kW".replace(".", ",")

    def price(self, per_kwh: float, currency: str) -> str:
        return f"{per_kwh:.2f} {currency}/kWh".replace(".", ",")


_kw = _Comma()


def test_hand_worked_sentences_in_german_and_dutch() -> None:
    de, nl = translations("de").gettext, translations("nl").gettext
    said = say("neighbourhood solar surplus expected, 3.1 kW", de, _kw)
    assert (said.text, said.english) == ("Solarüberschuss in der Nachbarschaft erwartet, 3,1 kW",
                                         False)  # fmt: skip
    said = say("your washing machine's window: neighbourhood wind surplus expected, 12.0 kW", nl,
               _kw)  # fmt: skip
    assert said.text == (
        "tijdvenster voor washing machine: overschot aan windstroom in de buurt verwacht, 12,0 kW"
    )
    said = say("neighbourhood peak: 7.2 kW from the grid expected", de, _kw)
    assert said.text == "Spitzenlast in der Nachbarschaft: 7,2 kW aus dem Netz erwartet"
    assert say("cheap grid price then, 0.05 EUR/kWh", de, _kw).text == (
        "günstiger Netzstrom dann, 0,05 EUR/kWh"
    )
    assert say("no local surplus expected now", nl, _kw).text == (
        "nu geen overschot in de buurt verwacht"
    )


def test_a_sentence_the_page_does_not_know_stays_as_the_hub_wrote_it() -> None:
    de = translations("de").gettext
    for text in ("a brand new reason, 3.1 kW", "your sauna's window: it is sunny",
                 "neighbourhood solar surplus expected, lots"):  # fmt: skip
        said = say(text, de, _kw)
        assert (said.text, said.english) == (text, True)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_every_reason_the_hub_writes_is_said_in_german(
    case: tuple[Outlook, list[Job], int],
) -> None:
    o, jobs, now = case
    p = plan(jobs, o, now)
    de = translations("de").gettext
    for home in {j.home for j in jobs}:
        prompts = build_prompts(p, home, now)
        if prompts is None:
            continue
        reasons = [prompts.reason, *(s.reason for s in prompts.levels),
                   *(a.reason for a in prompts.appliances)]  # fmt: skip
        for reason in reasons:
            said = say(reason, de, _kw)
            assert not said.english, reason
            assert said.text != reason
