"""The command grammar of the offline corpus: edge-device voice commands and spoken numbers.

The project owns it so the corpus is reproducible from a seed and its vocabulary is closed (a few
hundred words), like the keyword-and-command domain of an on-device recogniser.
"""

from __future__ import annotations

import random
import re

ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
        "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
            "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth",
            "eighteenth", "nineteenth", "twentieth", "twenty first", "twenty second", "twenty third",
            "twenty fourth", "twenty fifth", "twenty sixth", "twenty seventh", "twenty eighth",
            "twenty ninth", "thirtieth", "thirty first"]


def number_words(n: int) -> str:
    """Spell 0 <= n < 1_000_000 the way people say it ("two thousand four hundred and five")."""
    if n < 0 or n >= 1_000_000:
        raise ValueError(f"number out of range: {n}")
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else " " + ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return ONES[n // 100] + " hundred" + ("" if rest == 0 else " and " + number_words(rest))
    rest = n % 1000
    head = number_words(n // 1000) + " thousand"
    if rest == 0:
        return head
    return head + (" and " if rest < 100 else " ") + number_words(rest)


ROOMS = ["kitchen", "bedroom", "living room", "bathroom", "garage", "office", "hallway", "basement",
         "dining room", "kids room", "guest room", "porch", "garden", "attic", "laundry room"]
DEVICES = ["lights", "lamp", "fan", "heater", "air conditioner", "tv", "radio", "speaker", "oven",
           "dishwasher", "washing machine", "coffee maker", "kettle", "vacuum", "humidifier", "blinds",
           "curtains", "door lock", "alarm system", "camera", "sprinklers", "fireplace", "printer"]
COLORS = ["red", "green", "blue", "yellow", "orange", "purple", "pink", "white", "warm white", "cool white"]
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "today", "tomorrow",
        "tonight", "this weekend", "next week"]
MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september",
          "october", "november", "december"]
PARTS_OF_DAY = ["in the morning", "in the afternoon", "in the evening", "at night"]
CONTACTS = ["mom", "dad", "grandma", "grandpa", "my sister", "my brother", "the office", "doctor smith",
            "alice", "bob", "charlie", "david", "emma", "frank", "grace", "henry", "julia", "kevin",
            "laura", "michael", "nina", "oliver", "peter", "sarah", "thomas", "victor", "william"]
GENRES = ["jazz", "rock", "classical music", "pop music", "country music", "the news", "podcasts",
          "relaxing music", "hip hop", "blues", "folk music", "my playlist", "the radio"]
CITIES = ["london", "paris", "berlin", "new york", "chicago", "boston", "seattle", "denver", "madrid",
          "rome", "tokyo", "sydney", "toronto", "dublin", "austin", "miami"]
ITEMS = ["milk", "eggs", "bread", "butter", "cheese", "apples", "bananas", "coffee", "tea", "rice",
         "pasta", "tomatoes", "potatoes", "onions", "chicken", "orange juice", "yogurt", "sugar", "flour",
         "paper towels", "soap", "batteries"]
UNITS = ["seconds", "minutes", "hours"]
WEATHER_WORDS = ["weather", "temperature", "forecast", "chance of rain", "wind speed", "humidity"]
POLITE_START = ["", "", "", "please ", "hey computer ", "okay device ", "could you ", "can you "]
POLITE_END = ["", "", "", "", " please", " now", " right now", " for me"]


def _time_phrase(rng: random.Random) -> str:
    hour = rng.randint(1, 12)
    minute = rng.choice([0, 0, 5, 10, 15, 20, 30, 40, 45, 50, rng.randint(1, 59)])
    if minute == 0:
        t = f"{ONES[hour] if hour < 20 else ''} o'clock" if rng.random() < 0.4 else ONES[hour]
    elif minute < 10:
        t = f"{ONES[hour]} oh {ONES[minute]}"
    else:
        t = f"{ONES[hour]} {number_words(minute)}"
    return t + rng.choice(["", "", " a m", " p m"])


def _duration(rng: random.Random) -> str:
    unit = rng.choice(UNITS)
    n = rng.randint(1, 12) if unit == "hours" else rng.choice([rng.randint(1, 99), rng.randint(1, 30)])
    if n == 1:
        return f"one {unit[:-1]}" if rng.random() < 0.7 else f"a {unit[:-1]}"
    return f"{number_words(n)} {unit}"


def _date(rng: random.Random) -> str:
    return f"{rng.choice(MONTHS)} {rng.choice(ORDINALS)}" if rng.random() < 0.6 else \
        f"the {rng.choice(ORDINALS)} of {rng.choice(MONTHS)}"


def _room(rng: random.Random) -> str:
    return rng.choice(["the ", "the ", ""]) + rng.choice(ROOMS) if rng.random() < 0.9 else "all the rooms"


TEMPLATES = [
    lambda r: f"set a timer for {_duration(r)}",
    lambda r: f"start a {_duration(r)} timer",
    lambda r: f"cancel the {r.choice(['timer', 'alarm', 'reminder'])}",
    lambda r: f"how much time is left on the {r.choice(['timer', 'oven timer', 'kitchen timer'])}",
    lambda r: f"set an alarm for {_time_phrase(r)}",
    lambda r: f"wake me up at {_time_phrase(r)} {r.choice(DAYS)}",
    lambda r: f"turn {r.choice(['on', 'off'])} the {r.choice(DEVICES)}",
    lambda r: f"turn {r.choice(['on', 'off'])} the {r.choice(DEVICES)} in {_room(r)}",
    lambda r: f"switch {r.choice(['on', 'off'])} {_room(r)} {r.choice(['lights', 'lamp', 'fan', 'heater'])}",
    lambda r: f"dim the lights in {_room(r)} to {number_words(r.choice(range(5, 100, 5)))} percent",
    lambda r: f"set {_room(r)} lights to {r.choice(COLORS)}",
    lambda r: f"set the thermostat to {number_words(r.randint(15, 80))} degrees",
    lambda r: f"{r.choice(['raise', 'lower'])} the temperature by {number_words(r.randint(1, 10))} degrees",
    lambda r: f"make it {r.choice(['warmer', 'cooler', 'brighter', 'darker', 'quieter', 'louder'])} in {_room(r)}",
    lambda r: f"set the volume to {number_words(r.randint(0, 10))}",
    lambda r: f"turn the volume {r.choice(['up', 'down'])}",
    lambda r: f"play {r.choice(GENRES)} in {_room(r)}",
    lambda r: f"play {r.choice(GENRES)}",
    lambda r: f"{r.choice(['pause', 'stop', 'resume', 'skip'])} the {r.choice(['music', 'song', 'podcast', 'radio'])}",
    lambda r: f"play the next {r.choice(['song', 'episode', 'track'])}",
    lambda r: f"what's the {r.choice(WEATHER_WORDS)} {r.choice(DAYS)}",
    lambda r: f"what's the {r.choice(WEATHER_WORDS)} in {r.choice(CITIES)} {r.choice(DAYS)}",
    lambda r: f"will it rain {r.choice(DAYS)} {r.choice(PARTS_OF_DAY)}",
    lambda r: f"call {r.choice(CONTACTS)}",
    lambda r: f"call {r.choice(CONTACTS)} at {_time_phrase(r)}",
    lambda r: f"send a message to {r.choice(CONTACTS)} saying i will be {r.choice(['late', 'home soon', 'there in ' + _duration(r)])}",
    lambda r: f"remind me to {r.choice(['call', 'text', 'email'])} {r.choice(CONTACTS)} {r.choice(DAYS)} at {_time_phrase(r)}",
    lambda r: f"remind me to buy {r.choice(ITEMS)} {r.choice(DAYS)}",
    lambda r: f"add {r.choice(ITEMS)} to the shopping list",
    lambda r: f"add {number_words(r.randint(2, 12))} {r.choice(ITEMS)} and {r.choice(ITEMS)} to my list",
    lambda r: f"remove {r.choice(ITEMS)} from the shopping list",
    lambda r: f"what's on my calendar {r.choice(DAYS)}",
    lambda r: f"schedule a meeting with {r.choice(CONTACTS)} on {_date(r)} at {_time_phrase(r)}",
    lambda r: f"what time is it in {r.choice(CITIES)}",
    lambda r: f"how far is {r.choice(CITIES)} from {r.choice(CITIES)}",
    lambda r: f"navigate to {r.choice(['home', 'work', 'the airport', 'the station', 'the nearest gas station', r.choice(CITIES)])}",
    lambda r: f"{r.choice(['lock', 'unlock'])} the {r.choice(['front door', 'back door', 'garage door', 'car'])}",
    lambda r: f"is the {r.choice(['front door', 'back door', 'garage door', 'window'])} {r.choice(['locked', 'open', 'closed'])}",
    lambda r: f"{r.choice(['open', 'close'])} the {r.choice(['blinds', 'curtains', 'garage door', 'window'])} in {_room(r)}",
    lambda r: f"preheat the oven to {number_words(r.choice(range(150, 500, 25)))} degrees",
    lambda r: f"start the {r.choice(['dishwasher', 'washing machine', 'vacuum', 'coffee maker', 'sprinklers'])} at {_time_phrase(r)}",
    lambda r: f"what is {number_words(r.randint(1, 999))} {r.choice(['plus', 'minus', 'times'])} {number_words(r.randint(1, 99))}",
    lambda r: f"convert {number_words(r.randint(1, 500))} {r.choice(['miles', 'pounds', 'ounces', 'cups', 'feet'])} to {r.choice(['kilometers', 'kilograms', 'grams', 'liters', 'meters'])}",
    lambda r: f"my code is {' '.join(ONES[r.randint(0, 9)] for _ in range(r.randint(4, 6)))}",
    lambda r: f"dial {' '.join(ONES[r.randint(0, 9)] for _ in range(r.randint(7, 10)))}",
    lambda r: f"the year {number_words(r.randint(1900, 2099)) if r.random() < 0.3 else number_words(r.randint(19, 20)) + ' ' + number_words(r.randint(10, 99))}",
    lambda r: f"set the {r.choice(['fan', 'heater', 'air conditioner'])} to level {number_words(r.randint(1, 5))}",
    lambda r: f"battery level of the {r.choice(['vacuum', 'camera', 'speaker', 'car', 'phone'])}",
    lambda r: f"show me the {r.choice(['front door', 'garage', 'garden', 'baby room'])} camera",
    lambda r: f"good {r.choice(['morning', 'night', 'evening'])}",
    lambda r: f"what's the date {r.choice(DAYS)}",
    lambda r: f"{r.choice(['yes', 'no', 'cancel', 'stop', 'repeat that', 'never mind', 'go back', 'help', 'thank you'])}",
]


def sample_sentence(rng: random.Random) -> str:
    """One command, lower case, words separated by single spaces."""
    body = rng.choice(TEMPLATES)(rng)
    s = rng.choice(POLITE_START) + body + rng.choice(POLITE_END)
    return re.sub(r"\s+", " ", s).strip()


def vocabulary(n_samples: int = 20000, seed: int = 0) -> set[str]:
    """The grammar's word set, estimated by sampling (documented size in the README)."""
    rng = random.Random(seed)
    words: set[str] = set()
    for _ in range(n_samples):
        words.update(sample_sentence(rng).split())
    return words
