//! A GraphQL-over-HTTP client (reqwest).

use serde_json::{json, Value};

#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub url: String,
    pub token: Option<String>,
}

/// A GraphQL response: `data`, the first error's code, and the HTTP status.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    pub fn data(&self) -> &Value {
        &self.body["data"]
    }
    pub fn code(&self) -> Option<&str> {
        self.body["errors"][0]["extensions"]["code"].as_str()
    }
    pub fn ok(&self) -> &Value {
        assert!(
            self.body.get("errors").is_none(),
            "unexpected errors: {}",
            self.body
        );
        self.data()
    }
}

impl Client {
    pub fn new(addr: std::net::SocketAddr, token: Option<String>) -> Client {
        Client {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .build()
                .expect("http client"),
            url: format!("http://{addr}/graphql"),
            token,
        }
    }

    pub fn with_token(&self, token: Option<String>) -> Client {
        Client {
            token,
            ..self.clone()
        }
    }

    pub async fn raw(&self, body: String) -> Reply {
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("http request");
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.expect("json response");
        Reply { status, body }
    }

    pub async fn query(&self, query: &str, variables: Value) -> Reply {
        self.raw(json!({ "query": query, "variables": variables }).to_string())
            .await
    }
}

pub const OPEN_AUCTION: &str = "mutation($input: OpenAuctionInput!) { openAuction(input: $input) { id status version endsAt } }";
pub const PLACE_BID: &str = "mutation($input: PlaceBidInput!) { placeBid(input: $input) { accepted duplicate auction { id highestBid { amountCents bidderId } version endsAt status } } }";

/// Opens an auction as `seller` and returns its id.
pub async fn open_auction(
    seller: &Client,
    start: i64,
    inc: i64,
    reserve: i64,
    ends_in_secs: i64,
) -> String {
    let ends_at = (chrono::Utc::now() + chrono::Duration::seconds(ends_in_secs)).to_rfc3339();
    let reply = seller
        .query(
            OPEN_AUCTION,
            json!({ "input": { "title": "Test car", "startingPriceCents": start, "minIncrementCents": inc, "reservePriceCents": reserve, "endsAt": ends_at } }),
        )
        .await;
    reply.ok()["openAuction"]["id"]
        .as_str()
        .expect("auction id")
        .to_string()
}

pub async fn place_bid(
    dealer: &Client,
    auction: &str,
    amount: i64,
    client_bid_id: Option<&str>,
) -> Reply {
    dealer
        .query(
            PLACE_BID,
            json!({ "input": { "auctionId": auction, "amountCents": amount, "clientBidId": client_bid_id } }),
        )
        .await
}
