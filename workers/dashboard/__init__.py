"""``ctwa dashboard``: the page of which ad brought which people, conversations and sales, and the JSON it is drawn
from — read-only, behind HTTP Basic (`access`), its figures from SQL (`figures`), served by `app`."""
