"""`efr serve`: a local web page and HTTP API over a loaded model (efr.serve.app.create_app).

    app.py       the routes, the token check, decoding and detection in threads; running_server for tests
    batching.py  requests' faces classified together on one model thread (bounded queue, bounded wait)
    limits.py    upload size, pixels, images per request; multipart parsed and images decoded in memory
    page.py      the page at / (plain HTML and JavaScript, no CDN)
"""
