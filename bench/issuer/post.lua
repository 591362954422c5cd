-- wrk script: POST /token with client_credentials and HTTP Basic client
-- authentication. BASIC is base64("id:secret"), set by run.sh.
wrk.method = "POST"
wrk.body = "grant_type=client_credentials"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic " .. os.getenv("BASIC")
