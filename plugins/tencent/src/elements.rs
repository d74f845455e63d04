//! `MsgBody` elements, as Tencent IM documents its message elements (`TIMTextElem`,
//! `TIMImageElem`...). Text becomes the message's text, media become attachments, and every
//! element that is not text is also kept as sent in the message's `data`, unknown types too.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use switchboard_core::{Attachment, Error};

/// One element of `MsgBody`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Element {
    msg_type: String,
    msg_content: Value,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Text {
    text: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Image {
    #[serde(default, rename = "UUID")]
    _uuid: Option<String>,
    #[serde(default)]
    _image_format: Option<i64>,
    image_info_array: Vec<ImageInfo>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ImageInfo {
    /// 1 original, 2 large, 3 thumbnail.
    #[serde(default, rename = "Type")]
    kind: Option<u8>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    _width: Option<u32>,
    #[serde(default)]
    _height: Option<u32>,
    #[serde(rename = "URL")]
    url: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct File {
    url: String,
    #[serde(default)]
    file_size: Option<u64>,
    #[serde(default)]
    file_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Sound {
    url: String,
    #[serde(default)]
    size: Option<u64>,
    /// Duration in seconds.
    #[serde(default)]
    _second: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Video {
    video_url: String,
    #[serde(default)]
    video_size: Option<u64>,
    #[serde(default)]
    _video_second: Option<u32>,
    #[serde(default)]
    video_format: Option<String>,
    #[serde(default)]
    _thumb_url: Option<String>,
    #[serde(default)]
    _thumb_size: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Location {
    #[serde(default)]
    _desc: Option<String>,
    latitude: f64,
    longitude: f64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Face {
    _index: i64,
    #[serde(default)]
    _data: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Custom {
    #[serde(default)]
    _data: Option<String>,
    #[serde(default)]
    _desc: Option<String>,
    #[serde(default)]
    _ext: Option<String>,
    #[serde(default)]
    _sound: Option<String>,
}

/// What a message's `MsgBody` comes to.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Content {
    /// The text elements, concatenated in order.
    pub text: String,
    /// Images, files, sounds and videos.
    pub attachments: Vec<Attachment>,
    /// Every element that is not text, as sent (`{"MsgType", "MsgContent"}`), in order.
    pub data: Vec<Value>,
}

fn content<T: DeserializeOwned>(element: &Element) -> Result<T, Error> {
    T::deserialize(&element.msg_content).map_err(|e| {
        Error::invalid(format!(
            "the {} element's MsgContent does not have the documented shape: {e}",
            element.msg_type
        ))
    })
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

fn non_empty_url(url: String, element: &str) -> Result<Option<String>, Error> {
    if url.is_empty() {
        Err(Error::invalid(format!(
            "the {element} element has an empty URL; send the media's download URL"
        )))
    } else {
        Ok(Some(url))
    }
}

/// Reads `MsgBody`. Fails on a known element whose content has the wrong shape; keeps
/// unknown element types in `data`.
pub(crate) fn read(elements: &[Element]) -> Result<Content, Error> {
    let mut out = Content::default();
    for element in elements {
        let attachment = match element.msg_type.as_str() {
            "TIMTextElem" => {
                out.text.push_str(&content::<Text>(element)?.text);
                continue;
            }
            "TIMImageElem" => {
                let image: Image = content(element)?;
                // The original (Type 1), else the first size listed.
                let best = image
                    .image_info_array
                    .iter()
                    .find(|i| i.kind == Some(1))
                    .or_else(|| image.image_info_array.first());
                best.map(|info| -> Result<Attachment, Error> {
                    Ok(Attachment {
                        url: non_empty_url(info.url.clone(), "TIMImageElem")?,
                        name: None,
                        size: info.size,
                        content_type: Some("image".to_owned()),
                    })
                })
                .transpose()?
            }
            "TIMFileElem" => {
                let file: File = content(element)?;
                Some(Attachment {
                    url: non_empty_url(file.url, "TIMFileElem")?,
                    name: non_empty(file.file_name),
                    size: file.file_size,
                    content_type: Some("file".to_owned()),
                })
            }
            "TIMSoundElem" => {
                let sound: Sound = content(element)?;
                Some(Attachment {
                    url: non_empty_url(sound.url, "TIMSoundElem")?,
                    name: None,
                    size: sound.size,
                    content_type: Some("sound".to_owned()),
                })
            }
            "TIMVideoFileElem" => {
                let video: Video = content(element)?;
                Some(Attachment {
                    url: non_empty_url(video.video_url, "TIMVideoFileElem")?,
                    name: None,
                    size: video.video_size,
                    content_type: Some(match non_empty(video.video_format) {
                        Some(format) => format!("video/{}", format.to_ascii_lowercase()),
                        None => "video".to_owned(),
                    }),
                })
            }
            "TIMLocationElem" => {
                let location: Location = content(element)?;
                if !(-90.0..=90.0).contains(&location.latitude)
                    || !(-180.0..=180.0).contains(&location.longitude)
                {
                    return Err(Error::invalid(format!(
                        "the TIMLocationElem is at latitude {} longitude {}, which is not on Earth",
                        location.latitude, location.longitude
                    )));
                }
                None
            }
            "TIMFaceElem" => {
                content::<Face>(element)?;
                None
            }
            "TIMCustomElem" => {
                content::<Custom>(element)?;
                None
            }
            other => {
                tracing::debug!(msg_type = other, "tencent message element kept as data");
                None
            }
        };
        out.attachments.extend(attachment);
        out.data.push(serde_json::json!({
            "MsgType": element.msg_type,
            "MsgContent": element.msg_content,
        }));
    }
    Ok(out)
}
