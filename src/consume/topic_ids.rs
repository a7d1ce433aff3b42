//! Topic ids from the broker (Kafka 2.8 and later; librdkafka's mock cluster, Tansu):
//! librdkafka's DescribeTopics, which the rdkafka crate does not wrap, through its C API.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// The id of each of `topics` the broker gives (Kafka 2.8 and later), base64 as Kafka's
/// tools print it. A broker without topic ids gives none, one that cannot describe topics
/// an error; a topic that does not exist is left out.
pub fn topic_ids(
    client: &BaseConsumer,
    topics: &[String],
    timeout: Duration,
) -> Result<BTreeMap<String, String>, String> {
    let names: Vec<CString> = topics
        .iter()
        .map(|t| CString::new(t.as_str()).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let mut pointers: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // Any broker answers a Metadata request; librdkafka would otherwise wait for the
    // controller, which librdkafka's mock cluster never names.
    let metadata = client
        .fetch_metadata(topics.first().map(String::as_str), timeout)
        .map_err(|e| e.to_string())?;
    let broker = metadata
        .brokers()
        .first()
        .map(|b| b.id())
        .ok_or("the broker names no broker")?;
    let rk = client.client().native_client().ptr();
    // SAFETY: every object is created here and destroyed by `Request`'s drop after the
    // result has been read; `names` outlives the collection that points into it, and
    // strings read from the result are copied before the event is destroyed.
    unsafe {
        let request = Request {
            collection: rd::rd_kafka_TopicCollection_of_topic_names(
                pointers.as_mut_ptr(),
                pointers.len(),
            ),
            options: rd::rd_kafka_AdminOptions_new(
                rk,
                rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS,
            ),
            queue: rd::rd_kafka_queue_new(rk),
            event: std::ptr::null_mut(),
        };
        let mut request = request;
        let mut errstr = [0 as c_char; 256];
        rd::rd_kafka_AdminOptions_set_request_timeout(
            request.options,
            timeout_ms,
            errstr.as_mut_ptr(),
            errstr.len(),
        );
        rd::rd_kafka_AdminOptions_set_broker(
            request.options,
            broker,
            errstr.as_mut_ptr(),
            errstr.len(),
        );
        rd::rd_kafka_DescribeTopics(rk, request.collection, request.options, request.queue);
        request.event = rd::rd_kafka_queue_poll(request.queue, timeout_ms.saturating_add(1000));
        request.ids()
    }
}

/// One DescribeTopics request's librdkafka objects, destroyed when dropped.
struct Request {
    collection: *mut rd::rd_kafka_TopicCollection_t,
    options: *mut rd::rd_kafka_AdminOptions_t,
    queue: *mut rd::rd_kafka_queue_t,
    event: *mut rd::rd_kafka_event_t,
}

impl Request {
    /// SAFETY: `event` is null or the request's result event.
    unsafe fn ids(&self) -> Result<BTreeMap<String, String>, String> {
        if self.event.is_null() {
            return Err("the broker did not describe the topics in time".into());
        }
        if rd::rd_kafka_event_error(self.event)
            != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
        {
            return Err(text(rd::rd_kafka_event_error_string(self.event)));
        }
        let result = rd::rd_kafka_event_DescribeTopics_result(self.event);
        if result.is_null() {
            return Err("not a DescribeTopics result".into());
        }
        let mut count = 0usize;
        let topics = rd::rd_kafka_DescribeTopics_result_topics(result, &mut count);
        let mut ids = BTreeMap::new();
        for i in 0..count {
            let topic = *topics.add(i);
            let error = rd::rd_kafka_TopicDescription_error(topic);
            if !error.is_null()
                && rd::rd_kafka_error_code(error)
                    != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
            {
                continue;
            }
            let id = rd::rd_kafka_TopicDescription_topic_id(topic);
            let zero = id.is_null()
                || (rd::rd_kafka_Uuid_most_significant_bits(id) == 0
                    && rd::rd_kafka_Uuid_least_significant_bits(id) == 0);
            if !zero {
                let name = text(rd::rd_kafka_TopicDescription_name(topic));
                ids.insert(name, text(rd::rd_kafka_Uuid_base64str(id)));
            }
        }
        Ok(ids)
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        // SAFETY: each pointer was created by this request and is destroyed once.
        unsafe {
            if !self.event.is_null() {
                rd::rd_kafka_event_destroy(self.event);
            }
            rd::rd_kafka_queue_destroy(self.queue);
            rd::rd_kafka_AdminOptions_destroy(self.options);
            rd::rd_kafka_TopicCollection_destroy(self.collection);
        }
    }
}

/// A C string from librdkafka, copied (empty when null).
///
/// SAFETY: `p` is null or a valid NUL-terminated string.
unsafe fn text(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    CStr::from_ptr(p).to_string_lossy().into_owned()
}
