// The seed design's auth server (shared/seeds/002: Express + jose), kept as
// written there: GET /token imports the PKCS#8 key and signs an RS256 JWT on
// every request. Only the port and key path come from the environment.
import express from "express";
import * as jose from "jose";
import fs from "fs";

const port = Number(process.env.PORT ?? 3001);
const privateKeyFile = fs.readFileSync(process.env.KEY_FILE, "utf8");

const app = express();

app.get("/token", async (req, res) => {
  try {
    const privateKey = await jose.importPKCS8(privateKeyFile, "RS256");
    const token = await new jose.SignJWT({ user: "exampleUser" })
      .setProtectedHeader({ alg: "RS256" })
      .setIssuedAt()
      .setExpirationTime("2h")
      .sign(privateKey);
    res.json({ token });
  } catch (err) {
    console.error("Error generating token:", err);
    res.status(500).json({ error: "Token generation failed" });
  }
});

app.listen(port, "127.0.0.1", () => console.log(`seed auth server on ${port}`));
