"""The front door: the aiohttp app that verifies Sinch's signature and answers only once RabbitMQ holds the
callback (`app`), its publisher with confirms (`publisher`), the signature check (`signature`) and its metrics."""
